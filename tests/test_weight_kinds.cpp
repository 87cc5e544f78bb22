// The weight-kind table (engine/layers/weight_kinds.hpp): for every kind, the arrays its sampling writes
// decode to the values the kind's documentation promises, their padding bits stay 0, and the product kernel
// the entry names computes a · W with exactly those values.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "fewmul/error.hpp"
#include "fewmul/kernels.hpp"
#include "layers/weight_kinds.hpp"
#include "test_support.hpp"

using namespace fewmul;

namespace {

dense_options options_of(weight_kind kind, int bits = 2) {
  dense_options o;
  o.kind = kind;
  o.weight_bits = bits;
  return o;
}

// What deterministic sampling makes of master weight v (fewmul/sample_mode.hpp, kernels.hpp "k-bit levels").
float expected_weight(const dense_options& o, float v) {
  switch (o.kind) {
    case weight_kind::fp32:
      return v;
    case weight_kind::binary:
      return v >= 0.0f ? 1.0f : -1.0f;
    case weight_kind::ternary:
      return std::fabs(v) >= 0.5f ? (v > 0.0f ? 1.0f : -1.0f) : 0.0f;
    case weight_kind::quantized:
      return kernels::level_value(kernels::level_of(v, o.weight_bits), o.weight_bits);
  }
  return NAN;
}

}  // namespace

TEST_CASE("every weight kind's table entry samples, decodes and multiplies with the same values") {
  const std::size_t depth = 37, width = 70, rows = 5;  // ragged: width spans two words with padding
  const std::size_t words = kernels::words_for(width), array_words = depth * words;
  const std::vector<float> master = fewmul_test::random_floats(depth * width, 11);
  const std::vector<float> a = fewmul_test::random_floats(rows * depth, 12);
  const auto& k = kernels::active_kernels();
  for (const dense_options& o : {options_of(weight_kind::fp32), options_of(weight_kind::binary),
                                 options_of(weight_kind::ternary), options_of(weight_kind::quantized, 2),
                                 options_of(weight_kind::quantized, 3), options_of(weight_kind::quantized, 8)}) {
    const detail::weight_kind_traits& t = detail::kind_traits(o.kind);
    const std::string name = t.name(o);
    CAPTURE(name);
    CHECK(!name.empty());
    if (t.check) t.check(o);
    const std::size_t arrays = static_cast<std::size_t>(t.arrays(o));
    CHECK(t.sampled == (arrays > 0));
    CHECK(t.multiplies == !t.sampled);
    std::vector<float> w = master;  // the weights as the products see them
    std::vector<std::uint64_t> bits;
    if (t.sampled) {
      // A packed model stores all planes in one vector, other kinds one vector per array.
      CHECK((t.stored_as[1] != nullptr ? 2u : 1u) == (t.planes ? 1u : arrays));
      bits.assign(arrays * array_words, ~std::uint64_t{0});
      t.sample(k, {.w = master.data(),
                   .rows = depth,
                   .cols = width,
                   .ld = width,
                   .options = o,
                   .mode = sample_mode::deterministic,
                   .key = 0,
                   .arrays = bits.data(),
                   .array_words = array_words,
                   .words = words});
      for (std::size_t j = 0; j < arrays * depth; ++j) CHECK((bits[j * words + words - 1] >> (width % 64)) == 0);
      for (std::size_t r = 0; r < depth; ++r)
        CHECK(t.decode_row(bits.data(), array_words, words, r, width, o, w.data() + r * width) == nullptr);
      for (std::size_t i = 0; i < w.size(); ++i) REQUIRE(w[i] == expected_weight(o, master[i]));
    }
    const int planes = t.planes ? static_cast<int>(arrays) : 0;
    const detail::weight_view view{master.data(), false, bits.data(), array_words};
    std::vector<float> out(rows * width), scratch(rows * width);
    t.multiply(k, {.a = a.data(),
                   .depth = depth,
                   .width = width,
                   .w = view,
                   .planes = planes,
                   .out = out.data(),
                   .scratch = scratch.data(),
                   .i0 = 0,
                   .i1 = rows,
                   .j0 = 0,
                   .j1 = width});
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < width; ++j) {
        double sum = 0.0;
        for (std::size_t d = 0; d < depth; ++d) sum += static_cast<double>(a[r * depth + d]) * w[d * width + j];
        REQUIRE(std::fabs(out[r * width + j] - sum) <= 1e-4 * (1.0 + std::fabs(sum)));
      }
  }
  CHECK_THROWS_AS(detail::kind_traits(weight_kind::quantized).check(options_of(weight_kind::quantized, 9)), error);
}

TEST_CASE("a ternary sign bit without its nonzero bit is refused by the decoder") {
  const dense_options o = options_of(weight_kind::ternary);
  const std::vector<std::uint64_t> bits = {0b10, 0b00};  // sign, nonzero: one row of 3 weights
  std::vector<float> w(3);
  const char* wrong = detail::kind_traits(o.kind).decode_row(bits.data(), 1, 1, 0, 3, o, w.data());
  REQUIRE(wrong != nullptr);
  CHECK(std::string(wrong).find("ternary sign bit") != std::string::npos);
}
