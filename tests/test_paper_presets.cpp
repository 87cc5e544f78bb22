// Issue 15: initialization, learning-rate schedules and presets after the papers each method comes from.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "fewmul/network.hpp"
#include "fewmul/train.hpp"

using namespace fewmul;

namespace {

struct init_stats {
  double saturated = 0, mean = 0, max_abs = 0, lr_scale = 0;
};

init_stats dense_init(method m, std::size_t inputs = 300, std::size_t outputs = 200) {
  auto layer = make_dense(inputs, outputs, dense_options_for(m), 7);
  const parameter& w = *layer->parameters().at(0);
  init_stats s;
  for (float v : w.value) {
    s.saturated += std::fabs(v) == 1.0f;
    s.mean += v;
    s.max_abs = std::max(s.max_abs, static_cast<double>(std::fabs(v)));
  }
  s.saturated /= static_cast<double>(w.value.size());
  s.mean /= static_cast<double>(w.value.size());
  s.lr_scale = w.lr_scale;
  return s;
}

}  // namespace

TEST_CASE("Lin et al. methods start uniform in plus or minus 2 clipped to 1, half the weights saturated") {
  for (method m : {method::bc, method::bc_stoch, method::tc, method::bc_qbp, method::tc_qbp}) {
    CAPTURE(method_name(m));
    const init_stats s = dense_init(m);
    CHECK(s.saturated == doctest::Approx(0.5).epsilon(0.03));
    CHECK(s.max_abs == 1.0);
    CHECK(std::fabs(s.mean) < 0.02);
    CHECK(s.lr_scale == doctest::Approx(500.0 / 1.5));  // (fan_in + fan_out) / 1.5
  }
}

TEST_CASE("BNN and QNN start uniform in plus or minus 1 with Adam steps scaled by the Glorot factor") {
  for (method m : {method::bnn, method::qnn}) {
    CAPTURE(method_name(m));
    const init_stats s = dense_init(m);
    CHECK(s.saturated < 0.001);
    CHECK(s.max_abs > 0.99);
    CHECK(s.max_abs <= 1.0);
    CHECK(std::fabs(s.mean) < 0.02);
    CHECK(s.lr_scale == doctest::Approx(std::sqrt(500.0 / 1.5)));
  }
}

TEST_CASE("fp32 keeps Glorot-uniform initialization and no learning-rate scale") {
  const init_stats s = dense_init(method::fp32);
  CHECK(s.max_abs <= std::sqrt(6.0 / 500.0));
  CHECK(s.max_abs > 0.9 * std::sqrt(6.0 / 500.0));
  CHECK(s.lr_scale == 1.0);
}
