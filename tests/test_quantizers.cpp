// Statistics of the stochastic samplers: unbiased means, respected bounds, documented determinism.
#include <doctest/doctest.h>

#include <cmath>

#include "fewmul/kernels.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {
constexpr std::size_t samples = 20000;
}

TEST_CASE("stochastic binarization has mean w (BinaryConnect: P(+1) = (w+1)/2)") {
  const auto& k = kernels::active_kernels();
  for (float w : {-1.5f, -0.8f, -0.3f, 0.0f, 0.45f, 0.9f, 1.2f}) {
    CAPTURE(w);
    std::vector<float> row(samples, w);
    std::vector<std::uint64_t> bits(kernels::words_for(samples));
    k.pack_binary(row.data(), 1, samples, samples, bits.data(), bits.size(), kernels::sample_mode::stochastic, 2024);
    double sum = 0;
    for (std::size_t c = 0; c < samples; ++c) sum += ((bits[c / 64] >> (c % 64)) & 1u) ? 1.0 : -1.0;
    const double expected = std::fmax(-1.0, std::fmin(1.0, w));
    CHECK(sum / samples == doctest::Approx(expected).epsilon(0).scale(1).epsilon(0.02));
  }
}

TEST_CASE("stochastic ternarization has mean w and P(nonzero) = |w|") {
  const auto& k = kernels::active_kernels();
  for (float w : {-0.9f, -0.25f, 0.0f, 0.5f, 0.75f}) {
    CAPTURE(w);
    std::vector<float> row(samples, w);
    std::vector<std::uint64_t> sign(kernels::words_for(samples)), nonzero(sign.size());
    k.pack_ternary(row.data(), 1, samples, samples, sign.data(), nonzero.data(), sign.size(),
                   kernels::sample_mode::stochastic, 7);
    double sum = 0, count = 0;
    for (std::size_t c = 0; c < samples; ++c) {
      if (!((nonzero[c / 64] >> (c % 64)) & 1u)) continue;
      ++count;
      sum += ((sign[c / 64] >> (c % 64)) & 1u) ? 1.0 : -1.0;
    }
    CHECK(count / samples == doctest::Approx(std::fabs(w)).epsilon(0).scale(1).epsilon(0.02));
    CHECK(sum / samples == doctest::Approx(w).epsilon(0).scale(1).epsilon(0.02));
  }
}

TEST_CASE("power-of-two quantizer is unbiased inside its range and respects its bounds") {
  const auto& k = kernels::active_kernels();
  const int kmin = -4, kmax = 3;
  for (float x : {0.01f, -0.04f, 0.0625f, 0.1f, -0.3f, 0.77f, 1.0f, -1.9f, 3.3f, 7.9f}) {
    CAPTURE(x);
    std::vector<float> v(samples, x);
    std::vector<std::int8_t> codes(samples);
    k.quantize_pow2(v.data(), samples, codes.data(), kmin, kmax, 31337, 0);
    double sum = 0;
    for (std::int8_t c : codes) {
      const float q = kernels::pow2_code_value(c);
      sum += q;
      if (c == 0) continue;
      const float magnitude = std::fabs(q);
      CHECK(magnitude >= std::ldexp(1.0f, kmin));
      CHECK(magnitude <= std::ldexp(1.0f, kmax));
      CHECK((q < 0) == (x < 0));
      // Only the two neighbouring powers of two (or 0 below the range) may appear.
      const float lower = std::ldexp(1.0f, static_cast<int>(std::floor(std::log2(std::fabs(x)))));
      if (std::fabs(x) >= std::ldexp(1.0f, kmin)) CHECK((magnitude == lower || magnitude == 2 * lower));
    }
    CHECK(sum / samples == doctest::Approx(x).epsilon(0.03));
  }
}

TEST_CASE("power-of-two quantizer: zero stays zero, large values saturate, exact powers are kept") {
  const auto& k = kernels::active_kernels();
  const float x[] = {0.0f, -0.0f, 100.0f, -1e30f, 0.25f, -2.0f, 8.0f};
  std::int8_t codes[7];
  for (std::uint64_t key = 0; key < 50; ++key) {
    k.quantize_pow2(x, 7, codes, -4, 3, key, 0);
    CHECK(codes[0] == 0);
    CHECK(codes[1] == 0);
    CHECK(kernels::pow2_code_value(codes[2]) == 8.0f);
    CHECK(kernels::pow2_code_value(codes[3]) == -8.0f);
    CHECK(kernels::pow2_code_value(codes[4]) == 0.25f);
    CHECK(kernels::pow2_code_value(codes[5]) == -2.0f);
    CHECK(kernels::pow2_code_value(codes[6]) == 8.0f);
  }
}

TEST_CASE("samplers depend on the key and index only") {
  const auto& k = kernels::active_kernels();
  const auto w = random_floats(300, 4);
  std::vector<std::uint64_t> a(5), b(5), c(5);
  k.pack_binary(w.data(), 1, 300, 300, a.data(), 5, kernels::sample_mode::stochastic, 1);
  k.pack_binary(w.data(), 1, 300, 300, b.data(), 5, kernels::sample_mode::stochastic, 1);
  k.pack_binary(w.data(), 1, 300, 300, c.data(), 5, kernels::sample_mode::stochastic, 2);
  CHECK(a == b);
  CHECK(a != c);
  // Splitting a row range into pieces with the matching index offset gives the same codes.
  std::vector<std::int8_t> whole(300), parts(300);
  k.quantize_pow2(w.data(), 300, whole.data(), -4, 3, 5, 1000);
  k.quantize_pow2(w.data(), 123, parts.data(), -4, 3, 5, 1000);
  k.quantize_pow2(w.data() + 123, 177, parts.data() + 123, -4, 3, 5, 1123);
  CHECK(whole == parts);
}
