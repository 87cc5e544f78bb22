// Every SIMD kernel against the scalar reference, bit for bit, on ragged shapes; and the reference
// against plain double-precision arithmetic.
#include <doctest/doctest.h>

#include <cmath>

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

}  // namespace

TEST_CASE("gemm kernels match the scalar reference bit for bit on ragged shapes") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t m : ragged(k.column_tile == 32 ? 8 : 4))
      for (std::size_t n : column_sizes)
        for (std::size_t depth : depth_sizes) {
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(depth);
          const std::uint32_t seed = static_cast<std::uint32_t>(m * 1000003 + n * 1009 + depth);
          // A read through a transposed view (a_rs = 1, a_cs = m) as the weight gradient does.
          const auto a = random_floats(m * depth, seed);
          const auto b = random_floats(depth * n, seed + 1);
          const std::size_t ldb = kernels::words_for(n);
          const auto bits = random_bits(depth, n, seed + 2);
          auto nonzero = random_bits(depth, n, seed + 3);
          auto sign = random_bits(depth, n, seed + 4);
          for (std::size_t i = 0; i < sign.size(); ++i) sign[i] &= nonzero[i];
          std::vector<float> rowsum(m);
          kernels::row_sums(a.data(), m, depth, depth, 1, rowsum.data());

          std::vector<float> want(m * n), got(m * n, -7.0f);
          ref.gemm_f32(m, n, depth, a.data(), depth, 1, b.data(), n, want.data(), n);
          k.gemm_f32(m, n, depth, a.data(), depth, 1, b.data(), n, got.data(), n);
          CHECK(same_bits(want, got));

          ref.gemm_f32(m, n, depth, a.data(), 1, m, b.data(), n, want.data(), n);
          k.gemm_f32(m, n, depth, a.data(), 1, m, b.data(), n, got.data(), n);
          CHECK(same_bits(want, got));

          ref.gemm_binary(m, n, depth, a.data(), depth, 1, rowsum.data(), bits.data(), ldb, want.data(), n);
          k.gemm_binary(m, n, depth, a.data(), depth, 1, rowsum.data(), bits.data(), ldb, got.data(), n);
          CHECK(same_bits(want, got));

          ref.gemm_ternary(m, n, depth, a.data(), depth, 1, sign.data(), nonzero.data(), ldb, want.data(), n);
          k.gemm_ternary(m, n, depth, a.data(), depth, 1, sign.data(), nonzero.data(), ldb, got.data(), n);
          CHECK(same_bits(want, got));

          std::vector<std::int8_t> codes(depth * n);
          k.quantize_pow2(b.data(), b.size(), codes.data(), -4, 3, 77, 0);
          ref.gemm_shift(m, n, depth, a.data(), 1, m, codes.data(), n, want.data(), n);
          k.gemm_shift(m, n, depth, a.data(), 1, m, codes.data(), n, got.data(), n);
          CHECK(same_bits(want, got));
        }
  }
}

TEST_CASE("gemm kernels write only their block when the output has a larger stride") {
  // A 64-aligned column block of a wider matrix, as the layers' parallel split issues it.
  const std::size_t m = 5, n_total = 150, depth = 33, j0 = 64, n = 70;
  const auto a = random_floats(m * depth, 5);
  const std::size_t ldb = kernels::words_for(n_total);
  const auto bits = random_bits(depth, n_total, 6);
  std::vector<float> rowsum(m);
  kernels::row_sums(a.data(), m, depth, depth, 1, rowsum.data());
  for (isa which : isas_under_test()) {
    CAPTURE(isa_label(which));
    std::vector<float> c(m * n_total, 42.0f);
    kernels::kernels_for(which).gemm_binary(m, n, depth, a.data(), depth, 1, rowsum.data(), bits.data() + j0 / 64, ldb,
                                            c.data() + j0, n_total);
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
  std::vector<float> rowsum(m);
  kernels::row_sums(a.data(), m, depth, depth, 1, rowsum.data());
  const auto b = random_floats(depth * n, 15);
  std::vector<std::int8_t> codes(depth * n);
  ref.quantize_pow2(b.data(), b.size(), codes.data(), -4, 3, 9, 0);
  std::vector<float> bin(m * n), ter(m * n), sh(m * n);
  ref.gemm_binary(m, n, depth, a.data(), depth, 1, rowsum.data(), bits.data(), ldb, bin.data(), n);
  ref.gemm_ternary(m, n, depth, a.data(), depth, 1, sign.data(), nonzero.data(), ldb, ter.data(), n);
  ref.gemm_shift(m, n, depth, a.data(), depth, 1, codes.data(), n, sh.data(), n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double want_bin = 0, want_ter = 0, want_sh = 0;
      for (std::size_t p = 0; p < depth; ++p) {
        const double v = a[i * depth + p];
        want_bin += v * bit_sign(bits, ldb, p, j);
        if ((nonzero[p * ldb + j / 64] >> (j % 64)) & 1u) want_ter += v * bit_sign(sign, ldb, p, j);
        want_sh += v * kernels::pow2_code_value(codes[p * n + j]);
      }
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
          ref.gemm_xnor(m, n, words, static_cast<std::int32_t>(k_bits), a.data(), words, bt.data(), n, want.data(), n);
          k.gemm_xnor(m, n, words, static_cast<std::int32_t>(k_bits), a.data(), words, bt.data(), n, got.data(), n);
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

TEST_CASE("row_sums sums each row in order (bit-exact) on ragged row counts and strides") {
  for (std::size_t rows : {1u, 7u, 8u, 9u, 17u, 200u})
    for (std::size_t cols : {1u, 5u, 288u}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const auto a = random_floats(rows * cols * 2, static_cast<std::uint32_t>(rows * 1000 + cols));
      for (bool transposed : {false, true}) {
        const std::size_t a_rs = transposed ? 1 : 2 * cols, a_cs = transposed ? rows : 1;
        std::vector<float> got(rows), want(rows);
        kernels::row_sums(a.data(), rows, cols, a_rs, a_cs, got.data());
        for (std::size_t r = 0; r < rows; ++r) {
          float acc = 0.0f;
          for (std::size_t c = 0; c < cols; ++c) acc += a[r * a_rs + c * a_cs];
          want[r] = acc;
        }
        CHECK(same_bits(got, want));
      }
    }
}
