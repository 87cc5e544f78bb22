// gemm_shift: every SIMD variant against the scalar reference, bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

// Codes as after a ReLU: about half exactly zero, the rest power-of-two codes of either sign.
std::vector<std::int8_t> relu_codes(const kernels::kernel_table& k, std::size_t count, std::uint32_t seed) {
  auto x = random_floats(count, seed, -2.0f, 2.0f);
  for (std::size_t i = 0; i < count; i += 2) x[i] = 0.0f;
  for (std::size_t i = 1; i < count; i += 7) x[i] = -x[i];
  std::vector<std::int8_t> codes(count);
  k.quantize_pow2(x.data(), count, codes.data(), -8, 3, seed, 0);
  return codes;
}

// The operands as a weight gradient reads them: codes [depth][m] with q_rs = 1, B [depth][n], C transposed.
kernels::gemm_shift_params weight_gradient_shaped(const std::vector<std::int8_t>& codes, const std::vector<float>& b,
                                                  std::size_t m, std::size_t n, std::size_t depth, bool list_b,
                                                  const kernels::cache_sizes& caches, void* workspace) {
  return {.m = m,
          .n = n,
          .k = depth,
          .q = codes.data(),
          .q_rs = 1,
          .q_cs = m,
          .b = b.data(),
          .ldb = n,
          .c = nullptr,
          .c_rs = 1,
          .c_cs = m,
          .list_b = list_b,
          .caches = caches,
          .workspace = workspace};
}

}  // namespace

TEST_CASE("gemm_shift matches the reference bit for bit across tiles and blocks") {
  for_each_packed_case([](const packed_case& t) {
    const auto b = random_floats(t.depth * t.n, t.seed + 1);
    const auto codes = relu_codes(t.k, t.m * t.depth, t.seed + 5);
    auto b_zeros = b;
    for (std::size_t i = 0; i < b_zeros.size(); i += 5) b_zeros[i] = 0.0f;
    // Values below the shift-safe range count as zeros (1e-35 < 2^-110; the smallest kept value is 2^-110).
    for (std::size_t i = 2; i < b_zeros.size(); i += 9) b_zeros[i] = i % 2 ? 1e-35f : std::ldexp(1.0f, -110);
    // Codes as A (row-major or transposed), B with exact zeros, C row-major or transposed (c_rs = 1, as the
    // weight gradient writes it).
    kernels::gemm_shift_params h{.m = t.m,
                                 .n = t.n,
                                 .k = t.depth,
                                 .q = codes.data(),
                                 .q_rs = t.a_rs,
                                 .q_cs = t.a_cs,
                                 .b = b_zeros.data(),
                                 .ldb = t.n,
                                 .c = nullptr,
                                 .c_rs = t.transposed ? 1 : t.n,
                                 .c_cs = t.transposed ? t.m : 1,
                                 .caches = t.caches,
                                 .workspace = t.workspace};
    // Both loop drivers: the codes' nonzeros (list_b false) and B's nonzeros (list_b true, zero codes masked).
    for (const bool list_b : {false, true}) {
      CAPTURE(list_b);
      h.list_b = list_b;
      h.b = b_zeros.data();
      CHECK(matches_reference(t.ref.gemm_shift, t.k.gemm_shift, h));
      // And B without zeros (the usual dense gradient), which the codes-driven loop adds without testing B.
      h.b = b.data();
      CHECK(matches_reference(t.ref.gemm_shift, t.k.gemm_shift, h));
    }
  });
}

TEST_CASE("gemm_shift q_rows (an implicit im2col of codes) matches the reference and the explicit codes bit for bit") {
  for_each_packed_case([](const packed_case& t) {
    if (t.transposed) return;  // the codes run along m (q_rs = 1), as a weight gradient reads them
    const auto b = random_floats(t.depth * t.n, t.seed + 1);
    // As test_gemm_f32's b_rows case: segments of 7 codes (runs across edges, scalar), 16 (one vector of
    // AVX-512 codes), 32 (a 64-code panel in two runs) and 64 entered 3 codes in; the codes start `first` into
    // the indirect rows (indirect_operand: one segment in five the padding).
    const std::pair<std::size_t, std::size_t> cuts[] = {{7, 3}, {16, 16}, {32, 32}, {64, 3}};
    for (const auto& cut : cuts) {
      const std::size_t segment = cut.first, first = cut.second;
      CAPTURE(segment);
      const std::size_t width = first + t.m;
      auto wide = relu_codes(t.k, t.depth * width, t.seed + 5);
      const indirect_operand<std::int8_t> indirect(wide, t.depth, width, segment, t.seed);
      kernels::gemm_shift_params h{.m = t.m,
                                   .n = t.n,
                                   .k = t.depth,
                                   .q = wide.data() + first,
                                   .q_rs = 1,
                                   .q_cs = width,
                                   .b = b.data(),
                                   .ldb = t.n,
                                   .c = nullptr,
                                   .c_rs = 1,
                                   .c_cs = t.m,
                                   .caches = t.caches,
                                   .workspace = t.workspace};
      for (const bool list_b : {false, true}) {
        CAPTURE(list_b);
        h.list_b = list_b;
        h.q = wide.data() + first;
        h.q_cs = width;
        h.q_rows = nullptr;
        std::vector<float> explicit_q(t.m * t.n), implicit_q(t.m * t.n);
        h.c = explicit_q.data();
        t.ref.gemm_shift(h);
        h.q = nullptr;
        h.q_cs = indirect.per_row;
        h.q_rows = indirect.rows.data();
        h.q_segment = segment;
        h.q_column = first;
        CHECK(matches_reference(t.ref.gemm_shift, t.k.gemm_shift, h));
        h.c = implicit_q.data();
        t.ref.gemm_shift(h);
        CHECK(same_bits(explicit_q, implicit_q));
      }
    }
  });
}

TEST_CASE("gemm_shift list_b packs whole code panels on vectors: m around the panel widths, every code") {
  // The packed sweep's rows stop at 37, below AVX-512's 64-wide code panel: these shapes reach the
  // vectorized panel build (full panels of codes contiguous along m, q_rs = 1) on every ISA, with codes
  // of the whole exponent range, both signs and zeros.
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (const kernels::cache_sizes& caches : caches_under_test()) {
      workspace ws(k.workspace_bytes(caches));
      for (std::size_t m : {15, 16, 17, 31, 32, 33, 63, 64, 65, 128, 130})
        for (std::size_t n : {1, 5, 16})
          for (std::size_t depth : {1, 7, 40}) {
            CAPTURE(m);
            CAPTURE(n);
            CAPTURE(depth);
            const auto seed = static_cast<std::uint32_t>(m * 7919 + n * 31 + depth);
            auto x = random_floats(m * depth, seed, -1.0f, 1.0f);
            for (std::size_t i = 0; i < x.size(); ++i)
              x[i] = i % 3 == 0 ? 0.0f : std::ldexp(x[i], static_cast<int>(i % 40) - 20);
            std::vector<std::int8_t> codes(x.size());
            k.quantize_pow2(x.data(), x.size(), codes.data(), kernels::pow2_min_exponent, kernels::pow2_max_exponent,
                            seed, 0);
            const auto b = random_floats(depth * n, seed + 1);
            // codes [depth][m]: Q(i, q) = codes[q * m + i], so q_rs = 1 as the weight gradient reads them.
            const auto h = weight_gradient_shaped(codes, b, m, n, depth, true, caches, ws.get());
            CHECK(matches_reference(kernels::reference_kernels().gemm_shift, k.gemm_shift, h));
          }
    }
  }
}

TEST_CASE("gemm_shift reference agrees with double-precision arithmetic") {
  const auto& ref = kernels::reference_kernels();
  const std::size_t m = 7, n = 70, depth = 100;
  const auto a = random_floats(m * depth, 11);
  const auto b = random_floats(depth * n, 15);
  std::vector<std::int8_t> codes(depth * n);
  ref.quantize_pow2(b.data(), b.size(), codes.data(), -4, 3, 9, 0);
  // The roles of the weight gradient: codes (of b) as A through a transposed view, a as B.
  std::vector<float> at(depth * m), c(m * n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t p = 0; p < depth; ++p) at[p * m + i] = a[i * depth + p];
  ref.gemm_shift({.m = n,
                  .n = m,
                  .k = depth,
                  .q = codes.data(),
                  .q_rs = 1,
                  .q_cs = n,
                  .b = at.data(),
                  .ldb = m,
                  .c = c.data(),
                  .c_rs = 1,
                  .c_cs = n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double want = 0;
      for (std::size_t p = 0; p < depth; ++p)
        want += static_cast<double>(a[i * depth + p]) * kernels::pow2_code_value(codes[p * n + j]);
      CHECK(c[i * n + j] == doctest::Approx(want).epsilon(1e-4).scale(10));
    }
}

TEST_CASE("gemm_shift reports B values above the shift-safe range or not finite, in both loop drivers") {
  const auto& ref = kernels::reference_kernels();
  const std::size_t m = 37, n = 33, depth = 21;
  std::vector<std::int8_t> codes(m * depth, 17);  // 2^1
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    workspace ws(k.workspace_bytes(kernels::detect_cache_sizes()));
    for (const float bad : {1e35f, -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                            std::ldexp(1.0f, 110), 0.5f})
      for (const std::size_t at : {std::size_t{0}, depth * n - 1, 5 * n + 31})
        for (const bool list_b : {false, true}) {
          CAPTURE(bad);
          CAPTURE(at);
          CAPTURE(list_b);
          std::vector<float> b(depth * n, 0.25f), c(m * n);
          b[at] = bad;
          const bool expected = !(std::fabs(bad) <= std::ldexp(1.0f, 110));
          for (const kernels::kernel_table* table : {&ref, &k}) {
            bool out_of_range = false;
            table->gemm_shift({.m = m,
                               .n = n,
                               .k = depth,
                               .q = codes.data(),
                               .q_rs = depth,
                               .q_cs = 1,
                               .b = b.data(),
                               .ldb = n,
                               .c = c.data(),
                               .c_rs = n,
                               .c_cs = 1,
                               .list_b = list_b,
                               .b_out_of_range = &out_of_range,
                               .caches = kernels::detect_cache_sizes(),
                               .workspace = ws.get()});
            CHECK(out_of_range == expected);
          }
        }
  }
}

TEST_CASE("gemm_shift lists built by squares: ragged listed counts, zero patterns, every code, both loop drivers") {
  // Either driver lists the operand stored along its listed dimension (the codes with q_rs = 1, B row-major)
  // lanes neighbours at a time through an in-register transpose and a compress-store: listed counts around
  // the square widths (4, 8, 16 lanes) and the tile rows, depths around the squares and the K blocks, and
  // operands with no zeros, only zeros and random zeros (values below the shift-safe range among B's).
  enum class zeros { none, all, random };
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (const kernels::cache_sizes& caches : caches_under_test()) {
      CAPTURE(caches.l1);
      workspace ws(k.workspace_bytes(caches));
      for (const std::size_t listed : {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33})
        for (const std::size_t depth : {1, 4, 15, 16, 17, 33, 130})
          for (const zeros pattern : {zeros::none, zeros::all, zeros::random}) {
            CAPTURE(listed);
            CAPTURE(depth);
            CAPTURE(static_cast<int>(pattern));
            const auto seed = static_cast<std::uint32_t>(listed * 7919 + depth * 13 + static_cast<int>(pattern));
            const std::size_t other = 21;  // the panelled dimension, past one panel on SSE
            // Codes of the whole exponent range and both signs; the pattern decides their zeros.
            auto x = random_floats(depth * std::max(listed, other), seed, 0.5f, 1.0f);
            for (std::size_t i = 0; i < x.size(); ++i) {
              x[i] = std::ldexp(i % 5 == 1 ? -x[i] : x[i], static_cast<int>(i % 37) - 18);
              if (pattern == zeros::all || (pattern == zeros::random && (i * 2654435761u >> 7) % 3 == 0)) x[i] = 0.0f;
            }
            std::vector<std::int8_t> codes(x.size());
            k.quantize_pow2(x.data(), x.size(), codes.data(), kernels::pow2_min_exponent, kernels::pow2_max_exponent,
                            seed, 0);
            auto b = random_floats(depth * std::max(listed, other), seed + 1);
            for (std::size_t i = 0; i < b.size(); ++i) {
              if (pattern == zeros::all || (pattern == zeros::random && (i * 2654435761u >> 9) % 4 != 0)) b[i] = 0.0f;
              if (pattern == zeros::random && i % 11 == 3) b[i] = 1e-35f;  // below the range: a zero
            }
            for (const bool list_b : {false, true}) {
              CAPTURE(list_b);
              // The listed operand is the codes (m = listed) or B (n = listed); codes [depth][m] read with
              // q_rs = 1 and B [depth][n], as the weight gradient reads them.
              const std::size_t m = list_b ? other : listed, n = list_b ? listed : other;
              const auto h = weight_gradient_shaped(codes, b, m, n, depth, list_b, caches, ws.get());
              CHECK(matches_reference(kernels::reference_kernels().gemm_shift, k.gemm_shift, h));
            }
          }
    }
  }
}

TEST_CASE("list-driven GEMMs at the deepest K block: 16-bit panel rows up to shift_kc_max and its padding row") {
  // Caches large enough that shift_blocks clamps kc to shift_kc_max: the lists' 16-bit rows then reach 4095
  // and the padding row 4096, and depth shift_kc_max + 5 adds a second, ragged K block. Rows of unequal
  // lengths (zeros at random) pad the shorter lists with that padding row. gemm_shift both ways and gemm_f32's
  // skip_zero_a (the same lists) against the reference, bit for bit, on every ISA.
  const kernels::cache_sizes deep{std::size_t{2} << 20, std::size_t{4} << 20,
                                  std::size_t{8} << 20};  // kc = 4096 at nr <= 64
  const std::size_t deepest = 4096;                       // engine/kernels/gemm_blocking.hpp's shift_kc_max
  const std::size_t m = 9, n = 37, depth = deepest + 5;
  const auto& ref = kernels::reference_kernels();
  std::vector<std::int8_t> codes(m * depth);
  {
    auto x = random_floats(m * depth, 77, -2.0f, 2.0f);
    for (std::size_t i = 0; i < x.size(); ++i)
      if ((i * 2654435761u) % 3 == 0) x[i] = 0.0f;
    ref.quantize_pow2(x.data(), x.size(), codes.data(), -8, 3, 77, 0);
  }
  auto b = random_floats(depth * n, 78);
  for (std::size_t i = 0; i < b.size(); ++i)
    if ((i * 40503u) % 4 == 0) b[i] = 0.0f;
  for (isa which : isas_under_test()) {
    CAPTURE(isa_label(which));
    const auto& k = kernels::kernels_for(which);
    workspace ws(k.workspace_bytes(deep));
    for (const bool list_b : {false, true}) {
      CAPTURE(list_b);
      CHECK(matches_reference(ref.gemm_shift, k.gemm_shift,
                              weight_gradient_shaped(codes, b, m, n, depth, list_b, deep, ws.get())));
    }
    // dy [depth][n] read transposed as A (m = n outputs, k = depth), B = the codes' values [depth][m].
    std::vector<float> values(codes.size());
    for (std::size_t i = 0; i < codes.size(); ++i) values[i] = kernels::pow2_code_value(codes[i]);
    CHECK(matches_reference(ref.gemm_f32, k.gemm_f32,
                            kernels::gemm_f32_params{.m = n,
                                                     .n = m,
                                                     .k = depth,
                                                     .a = b.data(),
                                                     .a_rs = 1,
                                                     .a_cs = n,
                                                     .b = values.data(),
                                                     .ldb = m,
                                                     .skip_zero_a = true,
                                                     .c = nullptr,
                                                     .ldc = m,
                                                     .caches = deep,
                                                     .workspace = ws.get()}));
  }
}
