// Same seed => same bits, whatever the thread count or ISA.
#include <doctest/doctest.h>

#include "fewmul/train.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

// A small synthetic 4-class problem: class = sign pattern of two random projections.
dataset synthetic(std::size_t n, std::size_t features, std::uint32_t seed) {
  dataset d;
  d.features = features;
  d.classes = 4;
  d.x = random_floats(n * features, seed);
  const auto u = random_floats(features, 1000), v = random_floats(features, 1001);
  for (std::size_t i = 0; i < n; ++i) {
    double a = 0, b = 0;
    for (std::size_t f = 0; f < features; ++f) {
      a += u[f] * d.x[i * features + f];
      b += v[f] * d.x[i * features + f];
    }
    d.y.push_back(static_cast<std::uint8_t>((a > 0) * 2 + (b > 0)));
  }
  return d;
}

std::vector<std::vector<float>> train_and_snapshot(method m, int threads, std::size_t epochs = 2) {
  const dataset train_set = synthetic(700, 48, 1), test_set = synthetic(200, 48, 2);
  network net = make_mlp(48, {96, 80}, 4, dense_options_for(m), activation::relu, 11);
  train_config config;
  config.training_method = m;
  config.epochs = epochs;
  config.batch = 50;
  config.threads = threads;
  config.validation = 100;
  config.seed = 99;
  train(net, train_set, test_set, config);
  return net.snapshot();
}

}  // namespace

TEST_CASE("training is bit-identical for 1, 2 and 16 threads") {
  for (method m : {method::fp32, method::bc_qbp, method::tc_qbp, method::bc_stoch}) {
    CAPTURE(method_name(m));
    const auto one = train_and_snapshot(m, 1);
    CHECK(one == train_and_snapshot(m, 2));
    CHECK(one == train_and_snapshot(m, 16));
  }
}

TEST_CASE("training is bit-identical on every ISA") {
  const isa saved = active_isa();
  for (method m : {method::fp32, method::bc_qbp, method::tc}) {
    CAPTURE(method_name(m));
    force_isa(isa::scalar);
    const auto reference = train_and_snapshot(m, 2, 1);
    for (isa which : isas_under_test()) {
      CAPTURE(isa_label(which));
      force_isa(which);
      CHECK(reference == train_and_snapshot(m, 2, 1));
    }
  }
  force_isa(saved);
}

TEST_CASE("a different seed gives a different run") {
  const dataset train_set = synthetic(300, 16, 1), test_set = synthetic(50, 16, 2);
  auto run = [&](std::uint64_t seed) {
    network net = make_mlp(16, {32}, 4, dense_options_for(method::bc_qbp), activation::relu, 11);
    train_config config;
    config.epochs = 1;
    config.batch = 50;
    config.validation = 50;
    config.seed = seed;
    train(net, train_set, test_set, config);
    return net.snapshot();
  };
  CHECK(run(1) != run(2));
}

TEST_CASE("synthetic problem is learned by every method") {
  const dataset train_set = synthetic(2000, 48, 1), test_set = synthetic(500, 48, 2);
  for (method m : {method::fp32, method::bc, method::bc_stoch, method::tc, method::bc_qbp, method::tc_qbp}) {
    CAPTURE(method_name(m));
    network net = make_mlp(48, {128}, 4, dense_options_for(m), activation::relu, 11);
    train_config config;
    config.training_method = m;
    config.epochs = 6;
    config.batch = 50;
    config.validation = 200;
    const auto result = train(net, train_set, test_set, config);
    CHECK(result.test_error_at_best < 0.30);  // chance is 0.75
  }
}
