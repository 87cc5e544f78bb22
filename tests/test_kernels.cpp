// Every SIMD kernel against the scalar reference, bit for bit, on ragged shapes; and the reference
// against plain double-precision arithmetic.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "fewmul/kernels.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

// Sizes around every tile edge: 1, tile-1, tile, tile+1 and a large one, for rows and columns.
std::vector<std::size_t> ragged(std::size_t tile) {
  std::vector<std::size_t> v{1, tile - 1, tile, tile + 1, 4 * tile + 3};
  if (tile == 1) v = {1, 2, 5};
  return v;
}
const std::vector<std::size_t> column_sizes{1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 130, 200};
const std::vector<std::size_t> depth_sizes{1, 2, 7, 64, 129};

double bit_sign(const std::vector<std::uint64_t>& bits, std::size_t ldb, std::size_t r, std::size_t c) {
  return ((bits[r * ldb + c / 64] >> (c % 64)) & 1u) ? 1.0 : -1.0;
}

// The packed GEMMs under test: this CPU's cache sizes, and tiny ones whose K, M and N blocks are a few
// elements, so small shapes cross every block boundary (block - 1, block, block + 1).
const kernels::cache_sizes tiny_caches{1024, 4096, 8192};
std::vector<kernels::cache_sizes> caches_under_test() { return {kernels::detect_cache_sizes(), tiny_caches}; }

// A 64-byte aligned workspace of the size the table asks for.
struct workspace {
  explicit workspace(std::size_t bytes) : storage(bytes / sizeof(float) + 16) {}
  void* get() { return reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(storage.data()) + 63) / 64 * 64); }
  std::vector<float> storage;
};

// Rows around the register tiles (4, 6, 8, 12 rows) and the tiny caches' M blocks, depths around the
// 4-groups and K blocks, columns around the panels (8, 16, 32) and words.
const std::vector<std::size_t> packed_rows{1, 2, 3, 4, 5, 7, 11, 12, 13, 23, 25, 37};
const std::vector<std::size_t> packed_depths{1, 3, 4, 5, 8, 9, 15, 16, 17, 31, 33, 130};
const std::vector<std::size_t> packed_columns{1, 7, 8, 9, 16, 17, 31, 32, 33, 63, 64, 65, 100, 130};

}  // namespace

// Codes as after a ReLU: about half exactly zero, the rest power-of-two codes of either sign.
std::vector<std::int8_t> relu_codes(const kernels::kernel_table& k, std::size_t count, std::uint32_t seed) {
  auto x = random_floats(count, seed, -2.0f, 2.0f);
  for (std::size_t i = 0; i < count; i += 2) x[i] = 0.0f;
  for (std::size_t i = 1; i < count; i += 7) x[i] = -x[i];
  std::vector<std::int8_t> codes(count);
  k.quantize_pow2(x.data(), count, codes.data(), -8, 3, seed, 0);
  return codes;
}

TEST_CASE("gemm_f32, gemm_binary, gemm_ternary and gemm_shift match the reference bit for bit across tiles and blocks") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (const kernels::cache_sizes& caches : caches_under_test()) {
      CAPTURE(caches.l1);
      workspace ws(k.workspace_bytes(caches));
      for (std::size_t m : packed_rows)
        for (std::size_t n : packed_columns)
          for (std::size_t depth : packed_depths) {
            CAPTURE(m);
            CAPTURE(n);
            CAPTURE(depth);
            const auto seed = static_cast<std::uint32_t>(m * 1000003 + n * 1009 + depth);
            const auto a = random_floats(m * depth, seed);
            const auto b = random_floats(depth * n, seed + 1);
            const auto bits = random_bits(depth, n, seed + 2);
            const auto nonzero = random_bits(depth, n, seed + 3);
            auto sign = random_bits(depth, n, seed + 4);
            for (std::size_t i = 0; i < sign.size(); ++i) sign[i] &= nonzero[i];
            const auto codes = relu_codes(k, m * depth, seed + 5);
            auto b_zeros = b;
            for (std::size_t i = 0; i < b_zeros.size(); i += 5) b_zeros[i] = 0.0f;
            std::vector<float> want(m * n), got(m * n, -7.0f);
            // A row-major (the forward pass) and through a transposed view (a_rs = 1, as the weight
            // gradient reads it).
            for (bool transposed : {false, true}) {
              CAPTURE(transposed);
              const std::size_t a_rs = transposed ? 1 : depth, a_cs = transposed ? m : 1;
              kernels::gemm_f32_params f{.m = m, .n = n, .k = depth, .a = a.data(), .a_rs = a_rs, .a_cs = a_cs,
                                         .b = b.data(), .ldb = n, .c = want.data(), .ldc = n, .caches = caches,
                                         .workspace = ws.get()};
              ref.gemm_f32(f);
              f.c = got.data();
              std::fill(got.begin(), got.end(), -7.0f);
              k.gemm_f32(f);
              CHECK(same_bits(want, got));

              kernels::gemm_binary_params g{.m = m, .n = n, .k = depth, .a = a.data(), .a_rs = a_rs, .a_cs = a_cs,
                                            .bits = bits.data(), .ldb = kernels::words_for(n), .c = want.data(),
                                            .ldc = n, .caches = caches, .workspace = ws.get()};
              ref.gemm_binary(g);
              g.c = got.data();
              std::fill(got.begin(), got.end(), -7.0f);
              k.gemm_binary(g);
              CHECK(same_bits(want, got));

              kernels::gemm_ternary_params t{.m = m, .n = n, .k = depth, .a = a.data(), .a_rs = a_rs, .a_cs = a_cs,
                                             .sign = sign.data(), .nonzero = nonzero.data(),
                                             .ldb = kernels::words_for(n), .c = want.data(), .ldc = n,
                                             .caches = caches, .workspace = ws.get()};
              ref.gemm_ternary(t);
              t.c = got.data();
              std::fill(got.begin(), got.end(), -7.0f);
              k.gemm_ternary(t);
              CHECK(same_bits(want, got));

              // Shift: codes as A (row-major or transposed), B with exact zeros, C row-major or transposed
              // (c_rs = 1, as the weight gradient writes it).
              kernels::gemm_shift_params h{.m = m, .n = n, .k = depth, .q = codes.data(), .q_rs = a_rs, .q_cs = a_cs,
                                           .b = b_zeros.data(), .ldb = n, .c = want.data(), .c_rs = transposed ? 1 : n,
                                           .c_cs = transposed ? m : 1, .caches = caches, .workspace = ws.get()};
              ref.gemm_shift(h);
              h.c = got.data();
              std::fill(got.begin(), got.end(), -7.0f);
              k.gemm_shift(h);
              CHECK(same_bits(want, got));
              // And B without zeros (the usual gradient), which the kernel multiplies without testing B.
              h.b = b.data();
              h.c = want.data();
              ref.gemm_shift(h);
              h.c = got.data();
              std::fill(got.begin(), got.end(), -7.0f);
              k.gemm_shift(h);
              CHECK(same_bits(want, got));
            }
          }
    }
  }
}

TEST_CASE("gemm_f32 reference is one fused multiply-add per step and gemm_binary sums groups of four") {
  // Values chosen so that a separate multiply and add rounds differently from the fused one:
  // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24, and the 2^-24 is lost unless the product is kept exact.
  const float x = 1.0f + std::ldexp(1.0f, -12), bias = -(1.0f + std::ldexp(1.0f, -11));
  const float a[2] = {1.0f, x}, b[2] = {bias, x};
  float c = 0.0f;
  const kernels::gemm_f32_params f{.m = 1, .n = 1, .k = 2, .a = a, .a_rs = 2, .a_cs = 1, .b = b, .ldb = 1, .c = &c,
                                   .ldc = 1};
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
      k.gemm_f32({.m = 1, .n = 1, .k = 2, .a = a2, .a_rs = 2, .a_cs = 1, .b = b_signed, .ldb = 1, .c = &got, .ldc = 1,
                  .caches = kernels::detect_cache_sizes(), .workspace = ws.get()});
      CHECK(got == sign * up);
    }
  }
  // Binary, five inputs with bits +,-,+,+,-: ((a0 - a1) + (a2 + a3)) + ((-a4 + -0) + (-0 + -0)).
  const float v[5] = {1e8f, 1.0f, -1e8f, 3.0f, 0.5f};
  const std::uint64_t bits[5] = {1, 0, 1, 1, 0};
  float out = 0.0f;
  kernels::reference_kernels().gemm_binary({.m = 1, .n = 1, .k = 5, .a = v, .a_rs = 5, .a_cs = 1, .bits = bits,
                                            .ldb = 1, .c = &out, .ldc = 1});
  const float group0 = (v[0] - v[1]) + (v[2] + v[3]);
  CHECK(out == group0 + -v[4]);
}

TEST_CASE("gemm kernels write only their block when the output has a larger stride") {
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
    k.gemm_binary({.m = m, .n = n, .k = depth, .a = a.data(), .a_rs = depth, .a_cs = 1, .bits = bits.data() + j0 / 64,
                   .ldb = ldb, .c = c.data() + j0, .ldc = n_total, .caches = tiny_caches, .workspace = ws.get()});
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

TEST_CASE("reference gemms agree with double-precision arithmetic") {
  const auto& ref = kernels::reference_kernels();
  const std::size_t m = 7, n = 70, depth = 100;
  const auto a = random_floats(m * depth, 11);
  const std::size_t ldb = kernels::words_for(n);
  const auto bits = random_bits(depth, n, 12);
  auto nonzero = random_bits(depth, n, 13);
  auto sign = random_bits(depth, n, 14);
  for (std::size_t i = 0; i < sign.size(); ++i) sign[i] &= nonzero[i];
  const auto b = random_floats(depth * n, 15);
  std::vector<std::int8_t> codes(depth * n);
  ref.quantize_pow2(b.data(), b.size(), codes.data(), -4, 3, 9, 0);
  std::vector<float> f32(m * n), bin(m * n), ter(m * n), sh(m * n);
  ref.gemm_f32({.m = m, .n = n, .k = depth, .a = a.data(), .a_rs = depth, .a_cs = 1, .b = b.data(), .ldb = n,
                .c = f32.data(), .ldc = n});
  ref.gemm_binary({.m = m, .n = n, .k = depth, .a = a.data(), .a_rs = depth, .a_cs = 1, .bits = bits.data(), .ldb = ldb,
                   .c = bin.data(), .ldc = n});
  ref.gemm_ternary({.m = m, .n = n, .k = depth, .a = a.data(), .a_rs = depth, .a_cs = 1, .sign = sign.data(),
                    .nonzero = nonzero.data(), .ldb = ldb, .c = ter.data(), .ldc = n});
  // Shift with the roles of the weight gradient: codes (of b) as A through a transposed view, a as B.
  std::vector<float> at(depth * m);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t p = 0; p < depth; ++p) at[p * m + i] = a[i * depth + p];
  ref.gemm_shift({.m = n, .n = m, .k = depth, .q = codes.data(), .q_rs = 1, .q_cs = n, .b = at.data(), .ldb = m,
                  .c = sh.data(), .c_rs = 1, .c_cs = n});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double want_f32 = 0, want_bin = 0, want_ter = 0, want_sh = 0;
      for (std::size_t p = 0; p < depth; ++p) {
        const double v = a[i * depth + p];
        want_f32 += v * b[p * n + j];
        want_bin += v * bit_sign(bits, ldb, p, j);
        if ((nonzero[p * ldb + j / 64] >> (j % 64)) & 1u) want_ter += v * bit_sign(sign, ldb, p, j);
        want_sh += v * kernels::pow2_code_value(codes[p * n + j]);
      }
      CHECK(f32[i * n + j] == doctest::Approx(want_f32).epsilon(1e-4).scale(10));
      CHECK(bin[i * n + j] == doctest::Approx(want_bin).epsilon(1e-4).scale(10));
      CHECK(ter[i * n + j] == doctest::Approx(want_ter).epsilon(1e-4).scale(10));
      CHECK(sh[i * n + j] == doctest::Approx(want_sh).epsilon(1e-4).scale(10));
    }
}

TEST_CASE("packing matches the reference and keeps padding bits zero") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t cols : column_sizes)
      for (auto mode : {kernels::sample_mode::deterministic, kernels::sample_mode::stochastic}) {
        CAPTURE(cols);
        const std::size_t rows = 3, ldw = cols + 5, ldb = kernels::words_for(cols) + 1;
        auto w = random_floats(rows * ldw, static_cast<std::uint32_t>(cols), -1.3f, 1.3f);
        w[0] = 0.0f;
        w[ldw - 1] = -0.0f;
        std::vector<std::uint64_t> want(rows * ldb, 0), got(rows * ldb, ~0ull);
        ref.pack_binary(w.data(), rows, cols, ldw, want.data(), ldb, mode, 1234);
        k.pack_binary(w.data(), rows, cols, ldw, got.data(), ldb, mode, 1234);
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t word = 0; word < kernels::words_for(cols); ++word)
            CHECK(want[r * ldb + word] == got[r * ldb + word]);
        std::vector<std::uint64_t> want_s(rows * ldb, 0), want_z(rows * ldb, 0), got_s(rows * ldb, ~0ull),
            got_z(rows * ldb, ~0ull);
        ref.pack_ternary(w.data(), rows, cols, ldw, want_s.data(), want_z.data(), ldb, mode, 99);
        k.pack_ternary(w.data(), rows, cols, ldw, got_s.data(), got_z.data(), ldb, mode, 99);
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t word = 0; word < kernels::words_for(cols); ++word) {
            CHECK(want_s[r * ldb + word] == got_s[r * ldb + word]);
            CHECK(want_z[r * ldb + word] == got_z[r * ldb + word]);
            CHECK((got_s[r * ldb + word] & ~got_z[r * ldb + word]) == 0);  // sign ⊆ nonzero
          }
        const std::size_t last = kernels::words_for(cols) - 1, valid = cols - last * 64;
        if (valid < 64)
          for (std::size_t r = 0; r < rows; ++r) {
            CHECK((got[r * ldb + last] >> valid) == 0);
            CHECK((got_z[r * ldb + last] >> valid) == 0);
          }
      }
  }
}

TEST_CASE("deterministic packing follows the documented convention") {
  const float w[6] = {0.7f, -0.2f, 0.0f, -0.0f, 0.5f, -0.6f};
  std::uint64_t bits = 0, sign = 0, nonzero = 0;
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    k.pack_binary(w, 1, 6, 6, &bits, 1, kernels::sample_mode::deterministic, 0);
    CHECK(bits == 0b011101u);  // w >= 0 -> +1 (bit 1), so 0 and -0 give +1
    k.pack_ternary(w, 1, 6, 6, &sign, &nonzero, 1, kernels::sample_mode::deterministic, 0);
    CHECK(nonzero == 0b110001u);  // |w| >= 0.5
    CHECK(sign == 0b010001u);
  }
}

TEST_CASE("quantize_pow2 matches the reference on every ISA, edge values included") {
  const auto& ref = kernels::reference_kernels();
  std::vector<float> x = random_floats(1000, 3, -20.0f, 20.0f);
  const float specials[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-40f, 0.0625f, -0.0625f, 0.06f, 8.0f, 15.9f, -100.0f,
                            1.0f, 1.5f, -1.5f, 3e38f, 0.03125f, 0.049f};
  for (std::size_t i = 0; i < sizeof specials / sizeof specials[0]; ++i) x[i * 7] = specials[i];
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t n : {std::size_t{1}, std::size_t{3}, std::size_t{4}, std::size_t{15}, std::size_t{16},
                          std::size_t{17}, std::size_t{1000}})
      for (auto range : {std::pair{-4, 3}, std::pair{-15, 15}, std::pair{0, 0}}) {
        std::vector<std::int8_t> want(n), got(n);
        ref.quantize_pow2(x.data(), n, want.data(), range.first, range.second, 555, 17);
        k.quantize_pow2(x.data(), n, got.data(), range.first, range.second, 555, 17);
        CHECK(want == got);
      }
  }
}

TEST_CASE("transpose_bits matches a bit-by-bit transpose") {
  for (std::size_t rows : {1u, 63u, 64u, 65u, 130u})
    for (std::size_t cols : {1u, 63u, 64u, 65u, 200u}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const std::size_t ldi = kernels::words_for(cols), ldo = kernels::words_for(rows);
      const auto in = random_bits(rows, cols, static_cast<std::uint32_t>(rows * 7 + cols));
      std::vector<std::uint64_t> out(cols * ldo, ~0ull);
      kernels::transpose_bits(in.data(), rows, cols, ldi, out.data(), ldo);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
          REQUIRE(((in[r * ldi + c / 64] >> (c % 64)) & 1u) == ((out[c * ldo + r / 64] >> (r % 64)) & 1u));
      if (rows % 64)
        for (std::size_t c = 0; c < cols; ++c) CHECK((out[c * ldo + ldo - 1] >> (rows % 64)) == 0);
    }
}

TEST_CASE("gemm_xnor matches the reference bit for bit on ragged sizes, padding bits cancelling") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t m : {1u, 3u, 4u, 5u, 7u, 8u, 9u, 37u})
      for (std::size_t n : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 15u, 16u, 17u, 33u, 100u})
        for (std::size_t k_bits : {1u, 63u, 64u, 65u, 130u, 1000u}) {
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(k_bits);
          const std::size_t words = kernels::words_for(k_bits);
          const auto seed = static_cast<std::uint32_t>(m * 7919 + n * 31 + k_bits);
          const auto a = random_bits(m, k_bits, seed);
          const auto b = random_bits(n, k_bits, seed + 1);  // [n][words], padding 0
          std::vector<std::uint64_t> bt(words * n);
          for (std::size_t j = 0; j < n; ++j)
            for (std::size_t w = 0; w < words; ++w) bt[w * n + j] = b[j * words + w];
          std::vector<std::int32_t> want(m * n), got(m * n, -12345);
          kernels::gemm_xnor_params x{.m = m, .n = n, .k_words = words, .k_bits = static_cast<std::int32_t>(k_bits),
                                      .a = a.data(), .lda = words, .bt = bt.data(), .ldbt = n, .c = want.data(),
                                      .ldc = n};
          ref.gemm_xnor(x);
          x.c = got.data();
          k.gemm_xnor(x);
          CHECK(want == got);
          // The reference is the ±1 dot product.
          const std::size_t i = m / 2, j = n / 2;
          int dot = 0;
          for (std::size_t p = 0; p < k_bits; ++p)
            dot += (((a[i * words + p / 64] >> (p % 64)) & 1u) == ((b[j * words + p / 64] >> (p % 64)) & 1u)) ? 1 : -1;
          CHECK(want[i * n + j] == dot);
        }
  }
}
