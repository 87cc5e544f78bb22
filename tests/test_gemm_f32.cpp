// gemm_f32: every SIMD variant against the scalar reference, bit for bit; the reference's rounding.
#include <doctest/doctest.h>

#include <cmath>
#include <utility>
#include <vector>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

// The case's product with A as the case lays it out and B row-major [depth][n]; C is set by the caller.
kernels::gemm_f32_params case_params(const packed_case& t, const std::vector<float>& a, const std::vector<float>& b) {
  return {.m = t.m,
          .n = t.n,
          .k = t.depth,
          .a = a.data(),
          .a_rs = t.a_rs,
          .a_cs = t.a_cs,
          .b = b.data(),
          .ldb = t.n,
          .c = nullptr,
          .ldc = t.n,
          .caches = t.caches,
          .workspace = t.workspace};
}

}  // namespace

TEST_CASE("gemm_f32 matches the reference bit for bit across tiles and blocks") {
  for_each_packed_case([](const packed_case& t) {
    const auto a = random_floats(t.m * t.depth, t.seed);
    const auto b = random_floats(t.depth * t.n, t.seed + 1);
    CHECK(matches_reference(t.ref.gemm_f32, t.k.gemm_f32, case_params(t, a, b)));
    // B given as its transpose ([n][depth], a layer's [out][in] weights), row stride depth + 3.
    std::vector<float> bt((t.depth + 3) * t.n, 9.0f);
    for (std::size_t q = 0; q < t.depth; ++q)
      for (std::size_t j = 0; j < t.n; ++j) bt[j * (t.depth + 3) + q] = b[q * t.n + j];
    kernels::gemm_f32_params transposed = case_params(t, a, bt);
    transposed.ldb = t.depth + 3;
    transposed.b_transposed = true;
    CHECK(matches_reference(t.ref.gemm_f32, t.k.gemm_f32, transposed));
    // Same sums as the row-major B: the reference on the transposed copy equals it bit for bit.
    std::vector<float> plain(t.m * t.n), flipped(t.m * t.n);
    kernels::gemm_f32_params p = transposed;
    p.c = flipped.data();
    t.ref.gemm_f32(p);
    p.b = b.data();
    p.ldb = t.n;
    p.b_transposed = false;
    p.c = plain.data();
    t.ref.gemm_f32(p);
    CHECK(same_bits(plain, flipped));
  });
}

TEST_CASE("gemm_f32 skip_zero_a matches the reference bit for bit and gives the sums of the dense mode") {
  for_each_packed_case([](const packed_case& t) {
    // Three in four of A zero (signed zeros among them), as a pooled layer's output gradient.
    auto a = random_floats(t.m * t.depth, t.seed);
    for (std::size_t i = 0; i < a.size(); ++i)
      if ((i * 2654435761u + t.seed) % 4 != 0) a[i] = i % 3 == 0 ? -0.0f : 0.0f;
    const auto b = random_floats(t.depth * t.n, t.seed + 1);
    kernels::gemm_f32_params p = case_params(t, a, b);
    p.skip_zero_a = true;
    CHECK(matches_reference(t.ref.gemm_f32, t.k.gemm_f32, p));
    std::vector<float> skipped(t.m * t.n), dense(t.m * t.n);
    p.c = skipped.data();
    t.ref.gemm_f32(p);
    p.skip_zero_a = false;
    p.c = dense.data();
    t.ref.gemm_f32(p);
    CHECK(same_bits(skipped, dense));
  });
}

TEST_CASE("gemm_f32 b_rows (an implicit im2col) matches the reference and the explicit B bit for bit") {
  for_each_packed_case([](const packed_case& t) {
    auto a = random_floats(t.m * t.depth, t.seed);
    if (t.transposed)  // the weight gradient's A after a max-pool: mostly zeros, for skip_zero_a below
      for (std::size_t i = 0; i < a.size(); ++i)
        if ((i * 2654435761u + t.seed) % 4 != 0) a[i] = 0.0f;
    // Segments of 7 floats (runs across segment edges, scalar copies), of 32 (a panel of whole vectors in one
    // run or in two, as for a convolution with 32 channels) and of 64 entered 3 columns in (vectors, then a
    // scalar tail), B starting `first` columns into the indirect rows (a block of a parallel split); `wide` is
    // the explicit matrix of all the columns (indirect_operand: one segment in five the padding).
    for (const auto& cut : {std::pair<std::size_t, std::size_t>{7, 3}, {32, 32}, {64, 3}}) {
      const std::size_t segment = cut.first, first = cut.second;  // (not a structured binding: clang's CAPTURE)
      CAPTURE(segment);
      const std::size_t width = first + t.n;
      auto wide = random_floats(t.depth * width, t.seed + 1);
      const indirect_operand<float> indirect(wide, t.depth, width, segment, t.seed);
      for (const bool skip : {false, true}) {
        CAPTURE(skip);
        kernels::gemm_f32_params p = case_params(t, a, wide);
        p.b = wide.data() + first;
        p.ldb = width;
        p.skip_zero_a = skip;
        std::vector<float> explicit_b(t.m * t.n), implicit_b(t.m * t.n);
        p.c = explicit_b.data();
        t.ref.gemm_f32(p);
        p.b = nullptr;
        p.b_rows = indirect.rows.data();
        p.b_segment = segment;
        p.b_column = first;
        p.ldb = indirect.per_row;
        CHECK(matches_reference(t.ref.gemm_f32, t.k.gemm_f32, p));
        p.c = implicit_b.data();
        t.ref.gemm_f32(p);
        CHECK(same_bits(explicit_b, implicit_b));
      }
    }
  });
}

TEST_CASE("gemm_f32 reference is one fused multiply-add per step, and so is every ISA") {
  // Values chosen so that a separate multiply and add rounds differently from the fused one:
  // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24, and the 2^-24 is lost unless the product is kept exact.
  const float x = 1.0f + std::ldexp(1.0f, -12), bias = -(1.0f + std::ldexp(1.0f, -11));
  const float a[2] = {1.0f, x}, b[2] = {bias, x};
  float c = 0.0f;
  const kernels::gemm_f32_params f{
      .m = 1, .n = 1, .k = 2, .a = a, .a_rs = 2, .a_cs = 1, .b = b, .ldb = 1, .c = &c, .ldc = 1};
  kernels::reference_kernels().gemm_f32(f);
  CHECK(c == std::ldexp(1.0f, -24));
  for (isa which : isas_under_test()) {
    CAPTURE(isa_label(which));
    const auto& k = kernels::kernels_for(which);
    workspace ws(k.workspace_bytes(kernels::detect_cache_sizes()));
    float got = 1.0f;
    kernels::gemm_f32_params g = f;
    g.c = &got;
    g.caches = kernels::detect_cache_sizes();
    g.workspace = ws.get();
    k.gemm_f32(g);
    CHECK(got == std::ldexp(1.0f, -24));
  }
  // A sum whose double rounding lands exactly between two floats: x^2 = 1 + 2^-11 + 2^-24 is a float midpoint
  // and the 2^-80 already in the accumulator decides it upwards; an emulation through double that rounds
  // twice would tie to even (1 + 2^-11) instead.
  const float tiny = std::ldexp(1.0f, -40);
  const float a2[2] = {tiny, x}, b2[2] = {tiny, x};
  const float up = 1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -23);
  for (isa which : isas_under_test()) {
    CAPTURE(isa_label(which));
    const auto& k = kernels::kernels_for(which);
    workspace ws(k.workspace_bytes(kernels::detect_cache_sizes()));
    for (float sign : {1.0f, -1.0f}) {
      const float b_signed[2] = {sign * b2[0], sign * b2[1]};
      float got = 0.0f;
      k.gemm_f32({.m = 1,
                  .n = 1,
                  .k = 2,
                  .a = a2,
                  .a_rs = 2,
                  .a_cs = 1,
                  .b = b_signed,
                  .ldb = 1,
                  .c = &got,
                  .ldc = 1,
                  .caches = kernels::detect_cache_sizes(),
                  .workspace = ws.get()});
      CHECK(got == sign * up);
    }
  }
}

TEST_CASE("gemm_f32 reference agrees with double-precision arithmetic") {
  const std::size_t m = 7, n = 70, depth = 100;
  const auto a = random_floats(m * depth, 11);
  const auto b = random_floats(depth * n, 15);
  std::vector<float> c(m * n);
  kernels::reference_kernels().gemm_f32({.m = m,
                                         .n = n,
                                         .k = depth,
                                         .a = a.data(),
                                         .a_rs = depth,
                                         .a_cs = 1,
                                         .b = b.data(),
                                         .ldb = n,
                                         .c = c.data(),
                                         .ldc = n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double want = 0;
      for (std::size_t p = 0; p < depth; ++p) want += static_cast<double>(a[i * depth + p]) * b[p * n + j];
      CHECK(c[i * n + j] == doctest::Approx(want).epsilon(1e-4).scale(10));
    }
}
