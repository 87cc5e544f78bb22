// Quantized backprop rounded by the authors' rules (hantek/BinaryConnect layer.py quantized_bprop) against
// fewmul's unbiased rule: with dL/dy = 1 on one output, dW[i] is the sum over the batch of the power of two
// each input x[., i] was rounded to.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "fewmul/error.hpp"
#include "fewmul/kernels.hpp"
#include "fewmul/network.hpp"
#include "fewmul/train.hpp"

using namespace fewmul;

namespace {

// Mean rounded value of each of `values` over `rows` rows, for a dense layer with the options' rule.
std::vector<double> mean_rounded(const std::vector<float>& values, qbp_rounding rule, std::size_t rows = 4000) {
  dense_options o = dense_options_for(method::bc_qbp);
  o.qbp_round = rule;
  auto l = make_dense(values.size(), 1, o, 1);
  runtime rt(2);
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 7, .training = true};
  matrix x(rows, values.size()), y, dy(rows, 1);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t i = 0; i < values.size(); ++i) x.data[r * values.size() + i] = values[i];
  std::fill(dy.data.begin(), dy.data.end(), 1.0f);
  l->forward(x, y, ctx);
  l->backward(x, y, dy, nullptr, ctx);
  std::vector<double> mean;
  for (float g : l->parameters().at(0)->grad) mean.push_back(g / static_cast<double>(rows));
  return mean;
}

}  // namespace

TEST_CASE("the authors' convolution rounding: levels up to 16, small values and zeros to plus or minus 1/16") {
  const std::vector<float> x = {0.0f, 0.01f, -0.03f, 20.0f, -100.0f, 12.0f, 0.75f, -5.0f};
  const std::vector<double> conv = mean_rounded(x, qbp_rounding::authors_conv);
  CHECK(conv[0] == -1.0 / 16);  // T.switch(x > 0, 1, -1): an exact zero is negative
  CHECK(conv[1] == 1.0 / 16);   // below 2^-4: p_up < 0, never up
  CHECK(conv[2] == -1.0 / 16);
  CHECK(conv[3] == 16.0);  // floor clipped to 3, p_up >= 1: always 2^4
  CHECK(conv[4] == -16.0);
  CHECK(conv[5] == doctest::Approx(12.0).epsilon(0.03));  // 8 or 16, unbiased inside the range
  CHECK(conv[6] == doctest::Approx(0.75).epsilon(0.03));
  CHECK(conv[7] == doctest::Approx(-5.0).epsilon(0.03));
  // fewmul's unbiased rule on the same inputs: zeros stay 0, small values 0 or 1/16 on average |x|,
  // large ones saturate at 2^kmax = 8.
  const std::vector<double> unbiased = mean_rounded(x, qbp_rounding::unbiased);
  CHECK(unbiased[0] == 0.0);
  CHECK(unbiased[1] == doctest::Approx(0.01).epsilon(0.15));
  CHECK(unbiased[3] == 8.0);
  CHECK(unbiased[5] == 8.0);
  CHECK(unbiased[6] == doctest::Approx(0.75).epsilon(0.03));
}

TEST_CASE("the authors' dense rounding has no exponent clip and keeps zeros") {
  const std::vector<float> x = {0.0f, 0.01f, 20.0f, -100.0f, 3000.0f, 0.001f};
  const std::vector<double> dense = mean_rounded(x, qbp_rounding::authors_dense);
  CHECK(dense[0] == 0.0);
  CHECK(dense[1] == doctest::Approx(0.01).epsilon(0.03));  // between 2^-7 and 2^-6, unbiased
  CHECK(dense[2] == doctest::Approx(20.0).epsilon(0.03));
  CHECK(dense[3] == doctest::Approx(-100.0).epsilon(0.03));
  CHECK(dense[4] == doctest::Approx(3000.0).epsilon(0.03));
  CHECK(dense[5] == doctest::Approx(0.001).epsilon(0.03));
}

TEST_CASE("make_network gives convolutions the authors' convolution rule and dense layers theirs") {
  network_architecture a = convnet_lin_preset(32, 32, 3, 10, 0.0625);
  dense_options o = dense_options_for(method::tc_qbp);
  o.qbp_round = qbp_rounding::authors_dense;
  const network net = make_network(a, o, 1);
  const std::string d = net.describe();
  CHECK(d.find("conv3x3 32x32x3->8 valid ternary(stochastic)+qbp[authors' conv, -4,4]") == 0);
  CHECK(d.find("dense 64->64 ternary(stochastic)+qbp[authors' dense, unclipped]") != std::string::npos);
  train_config c;
  c.qbp_authors = true;
  c.qbp_kmax = 15;
  CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("--qbp-kmax must be below 15"), fewmul::error);
}
