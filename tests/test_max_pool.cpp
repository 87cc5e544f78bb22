// max_pool: every SIMD variant against the scalar reference, bit for bit (forward values and routed
// gradients), on channel counts around the vector widths and odd maps, with ties, signed zeros and NaNs;
// and the reference against windows worked out by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

// Values drawn from a few levels, so ties are common, with signed zeros and NaNs sprinkled in.
std::vector<float> pool_inputs(std::size_t n, std::uint32_t seed) {
  std::vector<float> x = random_floats(n, seed, -2.0f, 2.0f);
  for (float& v : x) v = std::round(v * 2.0f) / 2.0f;
  for (std::size_t i = 1; i < n; i += 7) x[i] = -0.0f;
  for (std::size_t i = 3; i < n; i += 29) x[i] = std::numeric_limits<float>::quiet_NaN();
  return x;
}

}  // namespace

TEST_CASE("max_pool matches the reference bit for bit on every ISA, channel count and odd map") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t channels : {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65})
      for (std::size_t height : {2, 3, 5})
        for (std::size_t width : {2, 3, 4, 7}) {
          CAPTURE(channels);
          CAPTURE(height);
          CAPTURE(width);
          const std::size_t images = 3, in = height * width * channels, out = (height / 2) * (width / 2) * channels;
          const auto seed = static_cast<std::uint32_t>(channels * 131 + height * 17 + width);
          const std::vector<float> x = pool_inputs(images * in, seed),
                                   dy = random_floats(images * out, seed + 1, -1.0f, 1.0f);
          std::vector<float> want_y(images * out, 7.0f), got_y = want_y;
          std::vector<float> want_dx(images * in, 7.0f), got_dx = want_dx;  // every element must be written
          kernels::max_pool_params p{.images = images, .height = height, .width = width, .channels = channels};
          p.x = x.data();
          p.dy = dy.data();
          p.y = want_y.data();
          p.dx = want_dx.data();
          ref.max_pool_forward(p);
          ref.max_pool_backward(p);
          p.y = got_y.data();
          p.dx = got_dx.data();
          k.max_pool_forward(p);
          k.max_pool_backward(p);
          CHECK(same_bits(want_y, got_y));
          CHECK(same_bits(want_dx, got_dx));
        }
  }
}

TEST_CASE("max_pool's reference keeps the first maximum, lets no NaN win and zeroes unread inputs") {
  // One channel, a 3x3 map: one window (rows 0-1, columns 0-1); row 2 and column 2 are read by none.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct example {
    float window[4];  // (0,0), (0,1), (1,0), (1,1)
    float pooled;
    int winner;
  };
  const example examples[] = {{{1, 3, 3, 2}, 3, 1},     {{5, 5, 5, 5}, 5, 0},   {{-1, -2, -0.5f, -3}, -0.5f, 2},
                              {{nan, 9, 9, 9}, nan, 0}, {{1, nan, 4, 2}, 4, 2}, {{0, 1, 2, 3}, 3, 3}};
  for (const example& e : examples) {
    std::vector<float> x(9, 100.0f);  // unread inputs larger than any window value
    x[0] = e.window[0];
    x[1] = e.window[1];
    x[3] = e.window[2];
    x[4] = e.window[3];
    const float gradient = 0.25f;
    std::vector<float> y(1, 7.0f), dx(9, 7.0f);
    kernels::max_pool_params p{.images = 1, .height = 3, .width = 3, .channels = 1};
    p.x = x.data();
    p.y = y.data();
    p.dy = &gradient;
    p.dx = dx.data();
    kernels::reference_kernels().max_pool_forward(p);
    kernels::reference_kernels().max_pool_backward(p);
    if (std::isnan(e.pooled))
      CHECK(std::isnan(y[0]));
    else
      CHECK(y[0] == e.pooled);
    const std::size_t at[4] = {0, 1, 3, 4};
    for (int i = 0; i < 4; ++i) CHECK(dx[at[i]] == (i == e.winner ? gradient : 0.0f));
    for (std::size_t i : {2, 5, 6, 7, 8}) CHECK(dx[i] == 0.0f);
  }
}
