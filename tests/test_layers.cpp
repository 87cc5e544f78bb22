// Finite-difference gradient checks of the layers in fp32 mode, and the packed layers against
// explicit ±1 / ternary matrices.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"
#include "fewmul/train.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

matrix random_matrix(std::size_t rows, std::size_t cols, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  matrix m(rows, cols);
  m.data = random_floats(rows * cols, seed, lo, hi);
  return m;
}

// Loss of a network on fixed data, evaluated in training mode (batch statistics), in double.
double network_loss(network& net, const matrix& x, const std::vector<std::uint8_t>& labels, loss_kind kind,
                    const runtime& rt) {
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  matrix grad;
  std::size_t errors = 0;
  return loss_and_gradient(kind, net.forward(x, ctx), labels.data(), grad, errors);
}

void check_network_gradients(network& net, const matrix& x, const std::vector<std::uint8_t>& labels, loss_kind kind) {
  runtime rt(1);
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  matrix grad;
  std::size_t errors = 0;
  loss_and_gradient(kind, net.forward(x, ctx), labels.data(), grad, errors);
  net.backward(grad, ctx);
  std::mt19937 pick(3);
  int checked = 0, trials = 0;
  auto numeric_gradient = [&](parameter* p, std::size_t i, float h) {
    const float saved = p->value[i];
    p->value[i] = saved + h;
    net.parameters_changed();
    const double plus = network_loss(net, x, labels, kind, rt);
    p->value[i] = saved - h;
    net.parameters_changed();
    const double minus = network_loss(net, x, labels, kind, rt);
    p->value[i] = saved;
    net.parameters_changed();
    return (plus - minus) / (2.0 * h);
  };
  for (parameter* p : net.parameters()) {
    const std::vector<float> analytic = p->grad;
    for (int trial = 0; trial < 12; ++trial, ++trials) {
      const std::size_t i = pick() % p->value.size();
      const float h = 1e-2f * std::fmax(1.0f, std::fabs(p->value[i]));
      const double coarse = numeric_gradient(p, i, h), fine = numeric_gradient(p, i, h / 2);
      // A step that crosses a ReLU or hinge kink shows as disagreement between the two step sizes;
      // float rounding forbids much smaller steps, so such samples are skipped (and counted).
      if (std::fabs(coarse - fine) > 0.02 * std::fmax(std::fabs(fine), 1e-2)) continue;
      CAPTURE(p->name);
      CAPTURE(i);
      // The loss is a float sum near 1, so each evaluation carries rounding noise of about 1e-7 and a
      // central difference over 2h = 1e-2 about 2e-5: gradients that small read as noise (a zero gradient
      // once measured 3.6e-5), hence the absolute floor of 0.03 * 3e-3 = 9e-5.
      CHECK(analytic[i] == doctest::Approx(fine).epsilon(0.03).scale(3e-3));
      ++checked;
    }
  }
  CHECK(checked >= trials * 3 / 4);
}

}  // namespace

TEST_CASE("fp32 MLP gradients match finite differences (cross-entropy and squared hinge)") {
  const matrix x = random_matrix(16, 12, 1);
  std::vector<std::uint8_t> labels(16);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::uint8_t>(i % 5);
  for (auto kind : {loss_kind::softmax_cross_entropy, loss_kind::squared_hinge})
    for (auto act : {activation::hard_tanh, activation::relu}) {
      CAPTURE(static_cast<int>(kind));
      CAPTURE(static_cast<int>(act));
      network net = make_mlp(12, {9, 7}, 5, dense_options_for(method::fp32), act, 42);
      check_network_gradients(net, x, labels, kind);
    }
}

TEST_CASE("layer input gradients match finite differences") {
  runtime rt(1);
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  std::vector<std::unique_ptr<layer>> layers;
  layers.push_back(make_dense(6, 5, dense_options_for(method::fp32), 3));
  layers.push_back(make_batch_norm(6));
  layers.push_back(make_hard_tanh(6));
  layers.push_back(make_relu(6));
  for (auto& l : layers) {
    CAPTURE(l->describe());
    matrix x = random_matrix(8, l->input_size(), 9, -1.5f, 1.5f);
    const matrix weights = random_matrix(8, l->output_size(), 10);  // loss = sum(weights * y)
    matrix y, dx;
    l->forward(x, y, ctx);
    l->backward(x, y, weights, &dx, ctx);
    auto loss = [&](const matrix& input) {
      matrix out;
      l->forward(input, out, ctx);
      double s = 0;
      for (std::size_t i = 0; i < out.data.size(); ++i) s += static_cast<double>(out.data[i]) * weights.data[i];
      return s;
    };
    for (std::size_t i = 0; i < x.data.size(); i += 3) {
      const float saved = x.data[i];
      if (std::fabs(std::fabs(saved) - 1.0f) < 0.02f || std::fabs(saved) < 0.02f) continue;  // kinks
      x.data[i] = saved + 1e-2f;
      const double plus = loss(x);
      x.data[i] = saved - 1e-2f;
      const double minus = loss(x);
      x.data[i] = saved;
      CHECK(dx.data[i] == doctest::Approx((plus - minus) / 2e-2).epsilon(0.02).scale(1e-3));
    }
  }
}

TEST_CASE("binary and ternary dense layers compute with the sampled weights forward and backward") {
  runtime rt(2);
  for (auto m : {method::bc, method::tc}) {
    for (bool training : {false, true}) {
      CAPTURE(method_name(m));
      CAPTURE(training);
      const std::size_t in = 70, out = 130, batch = 9;
      auto options = dense_options_for(m);
      options.training_sampling = kernels::sample_mode::deterministic;
      auto l = make_dense(in, out, options, 5);
      const std::vector<float>& w = l->parameters()[0]->value;
      const step_context ctx{
          .rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 1, .training = training};
      const matrix x = random_matrix(batch, in, 6);
      const matrix dy = random_matrix(batch, out, 7);
      matrix y, dx;
      l->forward(x, y, ctx);
      l->backward(x, y, dy, &dx, ctx);
      auto sampled = [&](std::size_t o, std::size_t i) {
        const float v = w[o * in + i];
        if (m == method::bc) return v >= 0.0f ? 1.0 : -1.0;
        return std::fabs(v) >= 0.5f ? (v > 0 ? 1.0 : -1.0) : 0.0;
      };
      for (std::size_t b = 0; b < batch; ++b) {
        for (std::size_t o = 0; o < out; ++o) {
          double want = 0;
          for (std::size_t i = 0; i < in; ++i) want += x.at(b, i) * sampled(o, i);
          CHECK(y.at(b, o) == doctest::Approx(want).epsilon(1e-4).scale(10));
        }
        for (std::size_t i = 0; i < in; ++i) {
          double want = 0;
          for (std::size_t o = 0; o < out; ++o) want += dy.at(b, o) * sampled(o, i);
          CHECK(dx.at(b, i) == doctest::Approx(want).epsilon(1e-4).scale(10));
        }
      }
    }
  }
}

TEST_CASE("quantized-backprop weight gradient is an unbiased estimate of the float gradient") {
  runtime rt(2);
  const std::size_t in = 40, out = 24, batch = 32;
  auto l = make_dense(in, out, dense_options_for(method::bc_qbp), 5);
  const matrix x = random_matrix(batch, in, 8, -2.0f, 2.0f);
  const matrix dy = random_matrix(batch, out, 9);
  std::vector<double> mean(in * out, 0.0);
  const int steps = 400;
  matrix y;
  for (int s = 0; s < steps; ++s) {
    const step_context ctx{.rt = rt,
                           .kernels = kernels::active_kernels(),
                           .seed = 77,
                           .step = static_cast<std::uint64_t>(s),
                           .training = true};
    l->forward(x, y, ctx);
    l->backward(x, y, dy, nullptr, ctx);
    const auto& g = l->parameters()[0]->grad;
    for (std::size_t i = 0; i < g.size(); ++i) mean[i] += g[i] / steps;
  }
  double err = 0, norm = 0;
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t i = 0; i < in; ++i) {
      double exact = 0;
      for (std::size_t b = 0; b < batch; ++b) exact += static_cast<double>(dy.at(b, o)) * x.at(b, i);
      err += (mean[o * in + i] - exact) * (mean[o * in + i] - exact);
      norm += exact * exact;
    }
  // Rounding noise averages out as 1/sqrt(steps); a bias of a few percent would not.
  CHECK(std::sqrt(err / norm) < 0.03);
}

TEST_CASE("a quantized-backprop layer refuses a non-finite or exploding gradient with a clear error") {
  runtime rt(2);
  for (const float bad : {1e35f, std::numeric_limits<float>::quiet_NaN()})
    for (const std::size_t out : {std::size_t{10}, std::size_t{300}}) {  // dy listed (out < in) or codes listed
      auto l = make_dense(100, out, dense_options_for(method::bc_qbp), 3);
      matrix x(8, 100), y, dy(8, out);
      x.data = random_floats(x.data.size(), 4);
      dy.data = random_floats(dy.data.size(), 5);
      dy.data[3 * out + 7] = bad;
      const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 4, .training = true};
      l->forward(x, y, ctx);
      CHECK_THROWS_WITH_AS(l->backward(x, y, dy, nullptr, ctx), doctest::Contains("exploding gradient"), error);
    }
}

TEST_CASE("layers reject inputs of the wrong width with a clear error") {
  runtime rt(1);
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  auto l = make_dense(10, 4, dense_options_for(method::bc), 1);
  matrix x(3, 11), y;
  CHECK_THROWS_WITH_AS(l->forward(x, y, ctx), doctest::Contains("got inputs of width 11"), fewmul::error);
  auto options = dense_options_for(method::bc_qbp, -20, 3);
  CHECK_THROWS_AS(make_dense(10, 4, options, 1), fewmul::error);
  network net;
  net.add(make_dense(10, 4, dense_options_for(method::fp32), 1));
  CHECK_THROWS_AS(net.add(make_relu(5)), fewmul::error);
}

TEST_CASE("operation counts reproduce Lin et al.'s figures for the MNIST MLP at batch 200") {
  auto count = [](method m, bool paper) {
    const network net = make_mlp(784, {1024, 1024, 1024}, 10, dense_options_for(m), activation::relu, 1);
    return net.training_ops(200, paper);
  };
  // Paper: full precision 1.7480e9 multiplications, TernaryConnect + quantized backprop 1.8492e6 (what
  // remains are batch norm's: 3 per feature and example, 3082 features).
  CHECK(count(method::fp32, true).multiplications == 3.0 * 2910208 * 200 + 3.0 * 3082 * 200);
  CHECK(count(method::tc_qbp, true).multiplications == 3.0 * 3082 * 200);
  CHECK(count(method::bc_qbp, false).multiplications == 3.0 * 3082 * 200);
  CHECK(count(method::bc_qbp, false).shifts == 2910208.0 * 200);
  // The engine computes no input gradient for the first layer: 784*1024 fewer per example.
  CHECK(count(method::fp32, false).multiplications == count(method::fp32, true).multiplications - 784.0 * 1024 * 200);
  CHECK(count(method::bc, false).multiplications == 2910208.0 * 200 + 3.0 * 3082 * 200);
}

TEST_CASE("operation counts of BNN and QNN count XNOR-popcount products as bit operations") {
  // MLP 784-1024-1024-1024-10 at batch 200; hidden products 1024*1024*2 + 1024*10 per example.
  const double first = 784.0 * 1024 * 200, hidden = (1024.0 * 1024 * 2 + 1024.0 * 10) * 200;
  const double batch_norm = 3.0 * 3082 * 200;
  const network bnn = make_mlp(784, {1024, 1024, 1024}, 10, dense_options_for(method::bnn), activation::sign, 1);
  const op_counts b = bnn.training_ops(200);
  CHECK(b.bit_operations == hidden);  // sign inputs x sign weights: XNOR-popcount
  // Only the first layer's weight gradient multiplies (float pixels times the gradient), plus batch norm.
  CHECK(b.multiplications == first + batch_norm);
  CHECK(b.shifts == 0.0);
  // Additions: the first layer's masked adds, the input gradients (no first layer: the hidden products),
  // every weight gradient's accumulation (sign flips and adds for the hidden ones), batch norm's six per value.
  CHECK(b.additions == first + hidden + (first + hidden) + 6.0 * 3082 * 200);
  // 2-bit weights and activations: one bit operation per plane pair; k-bit inputs make the hidden weight
  // gradients multiplications.
  const op_counts q =
      make_mlp(784, {1024, 1024, 1024}, 10, dense_options_for(method::qnn), activation::quantized, 1).training_ops(200);
  CHECK(q.bit_operations == 4.0 * hidden);
  CHECK(q.multiplications == first + hidden + batch_norm);
  // A convnet: every convolution after the first reads sign inputs.
  network_architecture arch = convnet_preset(8, 8, 3, 10, 1.0 / 16);
  arch.act = activation::sign;
  const op_counts conv = make_network(arch, dense_options_for(method::bnn), 1).training_ops(2);
  CHECK(conv.bit_operations > 0.0);
  CHECK(conv.multiplications > 0.0);  // the first convolution's weight gradient on float pixels
}

TEST_CASE("fp32 convnet gradients match finite differences") {
  // conv -> BN -> conv -> pool -> dense -> BN: the first convolution's gradient needs the second's
  // input gradient, the pool's routing and the per-channel BN backward. (No ReLU: with hundreds of
  // units a finite-difference step crosses kinks too often; ReLU's gate is tested on its own.)
  const auto fp32 = dense_options_for(method::fp32);
  conv_shape first{6, 5, 2, 3, 3, true}, second{6, 5, 3, 4, 3, false};
  network net;
  net.add(make_conv2d(first, fp32, 1));
  net.add(make_spatial_batch_norm(3, 30));
  net.add(make_conv2d(second, fp32, 2));
  net.add(make_max_pool(4, 3, 4));
  net.add(make_dense(2 * 1 * 4, 3, fp32, 3));
  net.add(make_batch_norm(3));
  const matrix x = random_matrix(6, 60, 2);
  std::vector<std::uint8_t> labels{0, 1, 2, 0, 1, 2};
  check_network_gradients(net, x, labels, loss_kind::softmax_cross_entropy);
}

TEST_CASE("a network runs batch norm and the ReLU after it as one pass, with the bits of the two apart") {
  // The network fuses the pair (the ReLU applied in the batch-norm kernels); the same layers run one by one,
  // unfused, must give the same output, input gradient and parameter gradients, bit for bit.
  runtime rt(2);
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 4, .step = 2, .training = true};
  const auto fp32 = dense_options_for(method::fp32);
  using batch_norm_factory = std::unique_ptr<layer> (*)(std::size_t);
  const batch_norm_factory factories[] = {[](std::size_t n) { return make_batch_norm(n); },
                                          [](std::size_t n) { return make_shift_batch_norm(n); }};
  for (const batch_norm_factory make_norm : factories) {
    std::vector<std::unique_ptr<layer>> apart;
    apart.push_back(make_dense(12, 9, fp32, 3));
    apart.push_back(make_norm(9));
    apart.push_back(make_relu(9));
    apart.push_back(make_dense(9, 5, fp32, 4));
    network net;
    net.add(make_dense(12, 9, fp32, 3));
    net.add(make_norm(9));
    net.add(make_relu(9));
    net.add(make_dense(9, 5, fp32, 4));
    CAPTURE(net.describe());
    const matrix x = random_matrix(16, 12, 5, -2.0f, 2.0f);
    const matrix dy = random_matrix(16, 5, 6);
    std::vector<matrix> outputs(apart.size());
    const matrix* current = &x;
    for (std::size_t i = 0; i < apart.size(); ++i) {
      apart[i]->forward(*current, outputs[i], ctx);
      current = &outputs[i];
    }
    const matrix* grad = &dy;
    std::vector<matrix> grads(apart.size());
    for (std::size_t i = apart.size(); i-- > 0;) {
      apart[i]->backward(i == 0 ? x : outputs[i - 1], outputs[i], *grad, i == 0 ? nullptr : &grads[i], ctx);
      grad = &grads[i];
    }
    std::size_t zeros = 0;
    for (float v : outputs[2].data) zeros += v == 0.0f;
    CHECK(zeros > 0);  // the ReLU cut something
    const matrix& y = net.forward(x, ctx);
    CHECK(y.data == outputs[3].data);
    net.backward(dy, ctx);
    const auto fused_parameters = net.parameters();
    std::vector<parameter*> apart_parameters;
    for (auto& l : apart)
      for (parameter* p : l->parameters()) apart_parameters.push_back(p);
    REQUIRE(fused_parameters.size() == apart_parameters.size());
    for (std::size_t i = 0; i < apart_parameters.size(); ++i) {
      CAPTURE(apart_parameters[i]->name);
      CHECK(fused_parameters[i]->grad == apart_parameters[i]->grad);
    }
  }
}
