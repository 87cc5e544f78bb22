// quantize_pow2: every SIMD variant against the scalar reference.
#include <doctest/doctest.h>

#include <utility>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("quantize_pow2 matches the reference on every ISA, edge values included") {
  const auto& ref = kernels::reference_kernels();
  std::vector<float> x = random_floats(1000, 3, -20.0f, 20.0f);
  const float specials[] = {0.0f,  -0.0f,   1e-30f, -1e-30f, 1e-40f, 0.0625f, -0.0625f, 0.06f, 8.0f,
                            15.9f, -100.0f, 1.0f,   1.5f,    -1.5f,  3e38f,   0.03125f, 0.049f};
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
