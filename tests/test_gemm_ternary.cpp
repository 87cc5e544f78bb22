// gemm_ternary: every SIMD variant against the scalar reference, bit for bit.
#include <doctest/doctest.h>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("gemm_ternary matches the reference bit for bit across tiles and blocks") {
  for_each_packed_case([](const packed_case& t) {
    const auto a = random_floats(t.m * t.depth, t.seed);
    const auto nonzero = random_bits(t.depth, t.n, t.seed + 3);
    auto sign = random_bits(t.depth, t.n, t.seed + 4);
    for (std::size_t i = 0; i < sign.size(); ++i) sign[i] &= nonzero[i];
    CHECK(matches_reference(t.ref.gemm_ternary, t.k.gemm_ternary,
                            kernels::gemm_ternary_params{.m = t.m,
                                                         .n = t.n,
                                                         .k = t.depth,
                                                         .a = a.data(),
                                                         .a_rs = t.a_rs,
                                                         .a_cs = t.a_cs,
                                                         .sign = sign.data(),
                                                         .nonzero = nonzero.data(),
                                                         .ldb = kernels::words_for(t.n),
                                                         .c = nullptr,
                                                         .ldc = t.n,
                                                         .caches = t.caches,
                                                         .workspace = t.workspace}));
  });
}

TEST_CASE("gemm_ternary reference agrees with double-precision arithmetic") {
  const std::size_t m = 7, n = 70, depth = 100;
  const auto a = random_floats(m * depth, 11);
  const std::size_t ldb = kernels::words_for(n);
  auto nonzero = random_bits(depth, n, 13);
  auto sign = random_bits(depth, n, 14);
  for (std::size_t i = 0; i < sign.size(); ++i) sign[i] &= nonzero[i];
  std::vector<float> c(m * n);
  kernels::reference_kernels().gemm_ternary({.m = m,
                                             .n = n,
                                             .k = depth,
                                             .a = a.data(),
                                             .a_rs = depth,
                                             .a_cs = 1,
                                             .sign = sign.data(),
                                             .nonzero = nonzero.data(),
                                             .ldb = ldb,
                                             .c = c.data(),
                                             .ldc = n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double want = 0;
      for (std::size_t p = 0; p < depth; ++p)
        if ((nonzero[p * ldb + j / 64] >> (j % 64)) & 1u) want += a[i * depth + p] * bit_sign(sign, ldb, p, j);
      CHECK(c[i * n + j] == doctest::Approx(want).epsilon(1e-4).scale(10));
    }
}
