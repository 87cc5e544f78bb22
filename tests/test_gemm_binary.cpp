// gemm_binary: every SIMD variant against the scalar reference, bit for bit; the reference's groups.
#include <doctest/doctest.h>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("gemm_binary matches the reference bit for bit across tiles and blocks") {
  for_each_packed_case([](const packed_case& t) {
    const auto a = random_floats(t.m * t.depth, t.seed);
    const auto bits = random_bits(t.depth, t.n, t.seed + 2);
    CHECK(matches_reference(t.ref.gemm_binary, t.k.gemm_binary,
                            kernels::gemm_binary_params{.m = t.m,
                                                        .n = t.n,
                                                        .k = t.depth,
                                                        .a = a.data(),
                                                        .a_rs = t.a_rs,
                                                        .a_cs = t.a_cs,
                                                        .bits = bits.data(),
                                                        .ldb = kernels::words_for(t.n),
                                                        .c = nullptr,
                                                        .ldc = t.n,
                                                        .caches = t.caches,
                                                        .workspace = t.workspace}));
  });
}

TEST_CASE("gemm_binary reference sums groups of four") {
  // Five inputs with bits +,-,+,+,-: ((a0 - a1) + (a2 + a3)) + ((-a4 + -0) + (-0 + -0)).
  const float v[5] = {1e8f, 1.0f, -1e8f, 3.0f, 0.5f};
  const std::uint64_t bits[5] = {1, 0, 1, 1, 0};
  float out = 0.0f;
  kernels::reference_kernels().gemm_binary(
      {.m = 1, .n = 1, .k = 5, .a = v, .a_rs = 5, .a_cs = 1, .bits = bits, .ldb = 1, .c = &out, .ldc = 1});
  const float group0 = (v[0] - v[1]) + (v[2] + v[3]);
  CHECK(out == group0 + -v[4]);
}

TEST_CASE("gemm_binary writes only its block when the output has a larger stride") {
  // A 64-aligned column block of a wider matrix, as the layers' parallel split issues it.
  const std::size_t m = 5, n_total = 150, depth = 33, j0 = 64, n = 70;
  const auto a = random_floats(m * depth, 5);
  const std::size_t ldb = kernels::words_for(n_total);
  const auto bits = random_bits(depth, n_total, 6);
  for (isa which : isas_under_test()) {
    CAPTURE(isa_label(which));
    const auto& k = kernels::kernels_for(which);
    workspace ws(k.workspace_bytes(tiny_caches));
    std::vector<float> c(m * n_total, 42.0f);
    k.gemm_binary({.m = m,
                   .n = n,
                   .k = depth,
                   .a = a.data(),
                   .a_rs = depth,
                   .a_cs = 1,
                   .bits = bits.data() + j0 / 64,
                   .ldb = ldb,
                   .c = c.data() + j0,
                   .ldc = n_total,
                   .caches = tiny_caches,
                   .workspace = ws.get()});
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n_total; ++j) {
        if (j < j0 || j >= j0 + n) {
          CHECK(c[i * n_total + j] == 42.0f);
          continue;
        }
        double want = 0;
        for (std::size_t p = 0; p < depth; ++p) want += a[i * depth + p] * bit_sign(bits, ldb, p, j);
        CHECK(c[i * n_total + j] == doctest::Approx(want).epsilon(1e-4));
      }
  }
}

TEST_CASE("gemm_binary reference agrees with double-precision arithmetic") {
  const std::size_t m = 7, n = 70, depth = 100;
  const auto a = random_floats(m * depth, 11);
  const std::size_t ldb = kernels::words_for(n);
  const auto bits = random_bits(depth, n, 12);
  std::vector<float> c(m * n);
  kernels::reference_kernels().gemm_binary({.m = m,
                                            .n = n,
                                            .k = depth,
                                            .a = a.data(),
                                            .a_rs = depth,
                                            .a_cs = 1,
                                            .bits = bits.data(),
                                            .ldb = ldb,
                                            .c = c.data(),
                                            .ldc = n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double want = 0;
      for (std::size_t p = 0; p < depth; ++p) want += a[i * depth + p] * bit_sign(bits, ldb, p, j);
      CHECK(c[i * n + j] == doctest::Approx(want).epsilon(1e-4).scale(10));
    }
}
