// A short real training run on a small MNIST subset.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "fewmul/packed_mlp.hpp"
#include "fewmul/train.hpp"

using namespace fewmul;

namespace {

// The first 6,000 training and 2,000 test images. The test script fetches MNIST first; a missing copy
// is a failure, not a skip.
std::pair<dataset, dataset> mnist_subset() {
  const char* env = std::getenv("FEWMUL_MNIST_DIR");
  const std::string dir = env ? env : FEWMUL_MNIST_DIR;
  REQUIRE_MESSAGE(std::filesystem::exists(std::filesystem::path(dir) / "train-labels-idx1-ubyte"),
                  "MNIST not found in " << dir << " (run apps/scripts/fetch-data.sh mnist)");
  mnist_data data = load_mnist(dir);
  return {data.train.slice(0, 6000), data.test.slice(0, 2000)};
}

// Minibatches of 100, 1,000 validation images, 2 threads.
train_config short_run(method m, std::size_t epochs) {
  train_config config;
  config.training_method = m;
  config.epochs = epochs;
  config.batch = 100;
  config.validation = 1000;
  config.threads = 2;
  return config;
}

}  // namespace

TEST_CASE("binary-connect + quantized backprop learns real MNIST digits") {
  const auto [train_set, test_set] = mnist_subset();
  for (method m : {method::bc_qbp, method::tc_qbp}) {
    CAPTURE(method_name(m));
    network net = make_mlp(784, {256, 256}, 10, dense_options_for(m), activation::relu, 7);
    const train_result r = train(net, train_set, test_set, short_run(m, 5));
    MESSAGE(method_name(m) << ": test error " << r.test_error_at_best);
    CHECK(r.test_error_at_best < 0.15);  // chance is 0.90
    CHECK(evaluate(net, test_set, runtime(2), true) == doctest::Approx(r.test_error_at_best));
    CHECK(evaluate(net, test_set, runtime(2), false) == doctest::Approx(r.test_error_packed_at_best));
    CHECK(r.test_error_packed_at_best < 0.25);
  }
}

TEST_CASE("BNN and 2-bit QNN learn real MNIST digits, and packed inference on the input bytes agrees") {
  const auto [train_set, test_set] = mnist_subset();
  for (method m : {method::bnn, method::qnn}) {
    CAPTURE(method_name(m));
    network_architecture arch;
    arch.hidden = {256, 256};
    arch.act = default_activation(m);
    network net = make_network(arch, dense_options_for(m, -4, 3, 2), 7);
    train_config config = short_run(m, 4);
    config.optimizer = optimizer_kind::adam;
    config.lr = default_learning_rate(m);
    const train_result r = train(net, train_set, test_set, config);
    MESSAGE(method_name(m) << ": test error " << r.test_error_at_best);
    CHECK(r.test_error_at_best < 0.2);  // chance is 0.90
    runtime rt(2);
    packed_mlp packed(net);
    std::vector<float> scores(test_set.size() * 10);
    packed.run(test_set.x.data(), test_set.size(), scores.data(), rt);
    CHECK(packed.last_run_used_input_bytes());
    matrix out(test_set.size(), 10);
    out.data = scores;
    const double packed_error = static_cast<double>(count_errors(out, test_set.y.data())) / test_set.size();
    MESSAGE(method_name(m) << ": packed (bit planes end to end) test error " << packed_error);
    CHECK(std::fabs(packed_error - evaluate(net, test_set, rt)) < 0.005);
  }
}
