// BNN pieces: sign activation with the straight-through estimator, and the XNOR-popcount forward pass
// of binary layers on ±1 inputs, which must equal the masked-add path bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "fewmul/model.hpp"
#include "fewmul/train.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("sign activation: ±1 forward, straight-through gradient cancelled where |x| > 1") {
  runtime rt(2);
  auto l = make_sign(7);
  CHECK(l->output_bits(true) == 1);
  CHECK(l->output_bits(false) == 1);
  matrix x(2, 7), y, dx;
  const float values[] = {-2.0f, -1.0f, -0.3f, 0.0f, 0.4f, 1.0f, 1.5f};
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t c = 0; c < 7; ++c) x.at(r, c) = values[c];
  matrix dy(2, 7);
  for (auto& v : dy.data) v = 0.25f;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  l->forward(x, y, ctx);
  l->backward(x, y, dy, &dx, ctx);
  const float want_y[] = {-1, -1, -1, 1, 1, 1, 1};
  const float want_dx[] = {0, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0};
  for (std::size_t c = 0; c < 7; ++c) {
    CHECK(y.at(1, c) == want_y[c]);
    CHECK(dx.at(1, c) == want_dx[c]);
  }
}

TEST_CASE("stochastic sign activation: P(+1) = hard_sigmoid(x) in training, deterministic at inference") {
  runtime rt(2);
  auto l = make_sign(5, true);
  const float values[] = {-1.5f, -0.5f, 0.0f, 0.6f, 2.0f};
  const std::size_t rows = 20000;
  matrix x(rows, 5), y;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < 5; ++c) x.at(r, c) = values[c];
  l->forward(x, y,
             step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 9, .training = true});
  for (std::size_t c = 0; c < 5; ++c) {
    double plus = 0;
    for (std::size_t r = 0; r < rows; ++r) plus += y.at(r, c) > 0;
    const double p = std::clamp((values[c] + 1.0) / 2.0, 0.0, 1.0);
    CHECK(plus / rows == doctest::Approx(p).epsilon(0).scale(1).epsilon(0.02));
  }
  l->forward(x, y,
             step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 9, .training = false});
  CHECK(y.at(0, 2) == 1.0f);
  CHECK(y.at(0, 1) == -1.0f);
}

TEST_CASE("binary layers on ±1 inputs: XNOR-popcount forward equals the masked-add path bit for bit") {
  const isa saved = active_isa();
  for (isa which : isas_under_test()) {
    force_isa(which);
    for (std::size_t in : {1u, 63u, 64u, 65u, 200u})
      for (std::size_t out : {1u, 15u, 16u, 17u, 130u}) {
        CAPTURE(isa_label(which));
        CAPTURE(in);
        CAPTURE(out);
        runtime rt(3);
        auto options = dense_options_for(method::bnn);
        auto plain = make_dense(in, out, options, 7), packed = make_dense(in, out, options, 7);
        packed->set_input_bits(1, 1);
        matrix x(9, in), y1, y2;
        const auto r = random_floats(x.data.size(), static_cast<std::uint32_t>(in * 31 + out));
        for (std::size_t i = 0; i < r.size(); ++i) x.data[i] = r[i] >= 0.0f ? 1.0f : -1.0f;
        for (bool training : {true, false}) {
          const step_context ctx{
              .rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 2, .training = training};
          plain->forward(x, y1, ctx);
          packed->forward(x, y2, ctx);
          CHECK(same_bits(y1.data, y2.data));
        }
      }
  }
  force_isa(saved);
}

TEST_CASE("binary layers on ±1 inputs: the weight gradient by additions equals sum_r dy x^T on every ISA") {
  const isa saved = active_isa();
  for (isa which : isas_under_test()) {
    force_isa(which);
    for (std::size_t in : {1u, 63u, 65u, 130u})
      for (std::size_t out : {1u, 17u, 64u}) {
        CAPTURE(isa_label(which));
        CAPTURE(in);
        CAPTURE(out);
        runtime rt(2);
        auto layer = make_dense(in, out, dense_options_for(method::bnn), 7);
        layer->set_input_bits(1, 1);  // after a sign activation
        matrix x(37, in), y, dy(37, out);
        const auto r = random_floats(x.data.size(), static_cast<std::uint32_t>(in * 31 + out));
        for (std::size_t i = 0; i < r.size(); ++i) x.data[i] = r[i] >= 0.0f ? 1.0f : -1.0f;
        dy.data = random_floats(dy.data.size(), static_cast<std::uint32_t>(in + out));
        const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 2, .training = true};
        layer->forward(x, y, ctx);
        layer->backward(x, y, dy, nullptr, ctx);
        const auto& g = layer->parameters()[0]->grad;
        for (std::size_t o = 0; o < out; ++o)
          for (std::size_t i = 0; i < in; ++i) {
            double want = 0;
            for (std::size_t b = 0; b < x.rows; ++b) want += static_cast<double>(dy.at(b, o)) * x.at(b, i);
            CHECK(g[o * in + i] == doctest::Approx(want).epsilon(1e-5).scale(1));
          }
      }
  }
  force_isa(saved);
}

namespace {

dataset quadrants(std::size_t n, std::uint32_t seed) {
  dataset d;
  d.features = 32;
  d.classes = 4;
  d.x = random_floats(n * 32, seed);
  for (std::size_t i = 0; i < n; ++i) {
    const float a = d.x[i * 32] + d.x[i * 32 + 1], b = d.x[i * 32 + 2] - d.x[i * 32 + 3];
    d.y.push_back(static_cast<std::uint8_t>((a > 0) * 2 + (b > 0)));
  }
  return d;
}

std::pair<train_result, std::vector<std::vector<float>>> train_bnn(int threads) {
  const dataset train_set = quadrants(2000, 1), test_set = quadrants(400, 2);
  network net = make_mlp(32, {256, 256}, 4, dense_options_for(method::bnn), activation::sign, 3);
  train_config config;
  config.training_method = method::bnn;
  config.optimizer = optimizer_kind::adam;
  config.lr = default_learning_rate(method::bnn);
  config.epochs = 6;
  config.batch = 50;
  config.validation = 200;
  config.threads = threads;
  const train_result r = train(net, train_set, test_set, config);
  return {r, net.snapshot()};
}

}  // namespace

TEST_CASE("a BNN learns, bit-identically for 1, 2 and 16 threads, and its model file reproduces it") {
  const auto [result, one] = train_bnn(1);
  CHECK(result.test_error_at_best < 0.25);  // chance is 0.75
  CHECK(one == train_bnn(2).second);
  CHECK(one == train_bnn(16).second);
  network net = make_mlp(32, {256, 256}, 4, dense_options_for(method::bnn), activation::sign, 3);
  net.restore(one);
  CHECK(net.describe().find("sign 256") != std::string::npos);
  model_metadata meta;
  meta.height = 1;
  meta.width = 32;
  const std::string path = (std::filesystem::temp_directory_path() / "fewmul_test_bnn.fwm").string();
  save_model(path, net, meta);
  model loaded = load_model(path);
  std::filesystem::remove(path);
  runtime rt(2);
  const dataset test_set = quadrants(400, 2);
  matrix x(test_set.size(), 32);
  x.data = test_set.x;
  const matrix want = net.forward(
      x, step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false});
  CHECK(same_bits(loaded.run(x, rt).data, want.data));
}
