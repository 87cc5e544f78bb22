// A short real training run on a small MNIST subset.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include "fewmul/train.hpp"

using namespace fewmul;

TEST_CASE("binary-connect + quantized backprop learns real MNIST digits") {
  const char* env = std::getenv("FEWMUL_MNIST_DIR");
  const std::string dir = env ? env : FEWMUL_MNIST_DIR;
  // The test script fetches MNIST first; a missing copy is a failure, not a skip.
  REQUIRE_MESSAGE(std::filesystem::exists(std::filesystem::path(dir) / "train-labels-idx1-ubyte"),
                  "MNIST not found in " << dir << " (run apps/fetch-data.sh mnist)");
  mnist_data data = load_mnist(dir);
  const dataset train_set = data.train.slice(0, 6000);
  const dataset test_set = data.test.slice(0, 2000);
  for (method m : {method::bc_qbp, method::tc_qbp}) {
    CAPTURE(method_name(m));
    network net = make_mlp(784, {256, 256}, 10, dense_options_for(m), activation::relu, 7);
    train_config config;
    config.training_method = m;
    config.epochs = 5;
    config.batch = 100;
    config.validation = 1000;
    config.threads = 2;
    const train_result r = train(net, train_set, test_set, config);
    MESSAGE(method_name(m) << ": test error " << r.test_error_at_best);
    CHECK(r.test_error_at_best < 0.15);  // chance is 0.90
    CHECK(evaluate(net, test_set, runtime(2), true) == doctest::Approx(r.test_error_at_best));
    CHECK(evaluate(net, test_set, runtime(2), false) == doctest::Approx(r.test_error_packed_at_best));
    CHECK(r.test_error_packed_at_best < 0.25);
  }
}
