// Hostile values: the one validation of every setting (shared by the CLI's flags, train() and the
// checkpoint reader) and the load-time validation of checkpoints and models.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "fewmul/error.hpp"
#include "fewmul/model.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;
namespace fs = std::filesystem;

TEST_CASE("every training setting is checked finite and in range, naming its flag") {
  CHECK(error_of([] { validate(train_config{}); }).empty());
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct bad_case {
    void (*set)(train_config&);
    const char* message;
  };
  const bad_case cases[] = {
      {[](train_config& c) { c.lr = std::numeric_limits<float>::quiet_NaN(); },
       "--lr must be a number in [1e-06, 1000], not nan"},
      {[](train_config& c) { c.lr = 1e-30f; }, "--lr must be a number in [1e-06, 1000]"},
      {[](train_config& c) { c.lr = -1.0f; }, "--lr must"},
      {[](train_config& c) { c.lr_decay = std::numeric_limits<float>::quiet_NaN(); }, "--lr-decay must"},
      {[](train_config& c) { c.momentum = 1.0f; }, "--momentum must be a number in [0, 0.999], not 1"},
      {[](train_config& c) { c.momentum = std::numeric_limits<float>::quiet_NaN(); }, "--momentum must"},
      {[](train_config& c) { c.epochs = 0; }, "--epochs must be a whole number in [1, 100000], not 0"},
      {[](train_config& c) { c.epochs = std::size_t{1} << 63; }, "--epochs must"},
      {[](train_config& c) { c.batch = 1; }, "--batch must"},
      {[](train_config& c) { c.threads = -1; }, "--threads must"},
      {[](train_config& c) { c.qbp_kmin = 5; }, "--qbp-kmin and --qbp-kmax"},
      {[](train_config& c) { c.weight_bits = 9; }, "--wbits must"},
      {[](train_config& c) { c.augment_shift = 17; }, "--augment-shift must"},
  };
  for (const bad_case& b : cases) {
    train_config c;
    b.set(c);
    CHECK(error_of([&] { validate(c); }).find(b.message) == 0);
  }
  network_architecture a;
  a.dropout_hidden = nan;
  CHECK_THROWS_WITH_AS(validate(a), doctest::Contains("--dropout-hidden must"), fewmul::error);
  a.dropout_hidden = 0.5f;
  a.dropout_input = inf;
  CHECK_THROWS_WITH_AS(validate(a), doctest::Contains("--dropout-input must"), fewmul::error);
  // The flag texts: a whole number neither wraps nor takes a sign; a number is all of the text.
  CHECK(whole_text_problem("18446744073709551615", 0, UINT64_MAX).empty());
  CHECK(whole_text_problem("18446744073709551616", 0, UINT64_MAX).find("must be a whole number") == 0);
  CHECK(!whole_text_problem("-1", 0, 10).empty());
  CHECK(!whole_text_problem("1.5", 0, 10).empty());
  CHECK(!whole_text_problem("", 0, 10).empty());
  CHECK(number_text_problem("0.5", 0, 1).empty());
  CHECK(number_text_problem("nan", 0, 1) == "must be a number in [0, 1], not nan");
  CHECK(number_text_problem("1e39", 0, 1000) == "must be a number in [0, 1000], not 1e+39");
  CHECK(!number_text_problem("0.5x", 0, 1).empty());
}

namespace {

checkpoint small_checkpoint(network& net) {
  checkpoint c;
  c.config.training_method = method::bc;
  c.architecture.height = 1;
  c.architecture.width = 20;
  c.architecture.hidden = {30};
  c.architecture.outputs = 3;
  c.meta.width = 20;
  c.meta.height = 1;
  c.state.network_state = net.snapshot();
  return c;
}

}  // namespace

TEST_CASE("a checkpoint is validated completely at load, naming the file") {
  network net = make_mlp(20, {30}, 3, dense_options_for(method::bc), activation::relu, 5);
  const std::string path = temp_path("hostile.ckpt");
  const checkpoint good = small_checkpoint(net);
  save_checkpoint(path, good);
  CHECK(error_of([&] { load_checkpoint(path); }).empty());
  struct bad_case {
    void (*damage)(checkpoint&);
    const char* message;
  };
  const bad_case cases[] = {
      {[](checkpoint& c) { c.config.epochs = 0; }, "impossible training configuration: --epochs"},
      {[](checkpoint& c) { c.config.epochs = std::size_t{1} << 63; }, "impossible training configuration: --epochs"},
      {[](checkpoint& c) { c.config.batch = 1; }, "--batch"},
      {[](checkpoint& c) { c.config.lr = -0.5f; }, "--lr"},
      {[](checkpoint& c) { c.config.lr = std::nanf(""); }, "--lr"},
      {[](checkpoint& c) { c.config.momentum = 1.0f; }, "--momentum"},
      {[](checkpoint& c) { c.architecture.dropout_hidden = std::nanf(""); }, "--dropout-hidden"},
      {[](checkpoint& c) { c.meta.input_scale = 0.0f; }, "scale"},
      {[](checkpoint& c) { c.meta.input_scale = -1.0f; }, "scale"},
      {[](checkpoint& c) { c.state.network_state[1][0] = std::nanf(""); }, "parameter"},
      // The snapshot: dense weights, then the batch norm's scale, shift, mean and variance, per layer.
      {[](checkpoint& c) {
         c.state.best_state = c.state.network_state;
         c.state.best_state[6][0] = std::nanf("");
       },
       "best-epoch parameter gamma"},
      {[](checkpoint& c) {
         c.state.best_state = c.state.network_state;
         c.state.best_state[4][0] = -1.0f;
       },
       "best-epoch batch-norm variance"},
      {[](checkpoint& c) { c.state.network_state[1][0] = 3e38f; }, "magnitude"},
      {[](checkpoint& c) { c.state.progress.best_epoch = 4; }, "best epoch 4 of 0"},
      {[](checkpoint& c) { c.state.progress.epochs.resize(30); }, "30 epochs done of a run of 20"},
      {[](checkpoint& c) { c.state.progress.best_validation_error = std::nan(""); }, "error rates"},
      {[](checkpoint& c) { c.state.optimizer_steps = -1; }, "step counters"},
  };
  for (const bad_case& b : cases) {
    checkpoint c = good;
    b.damage(c);
    save_checkpoint(path, c);
    const std::string message = error_of([&] { load_checkpoint(path); });
    CAPTURE(b.message);
    CAPTURE(message);
    CHECK(message.find(path) == 0);
    CHECK(message.find(b.message) != std::string::npos);
  }
  fs::remove(path);
}

TEST_CASE("a model whose values make its output meaningless is refused at load") {
  const std::string path = temp_path("hostile.fwm");
  model_metadata meta;
  meta.width = 20;
  meta.height = 1;
  auto model_with = [&](float epsilon, float gamma) {
    network net;
    net.add(make_dense(20, 3, dense_options_for(method::fp32), 1));
    net.add(make_batch_norm(3, epsilon));
    net.parameters()[1]->value.assign(3, gamma);
    save_model(path, net, meta);
  };
  model_with(1e-4f, 1.0f);
  CHECK(load_model(path).net.output_size() == 3);
  model_with(std::numeric_limits<float>::infinity(), 1.0f);
  CHECK_THROWS_WITH_AS(load_model(path), doctest::Contains("epsilon"), fewmul::error);
  model_with(1e-30f, 1.0f);
  CHECK_THROWS_WITH_AS(load_model(path), doctest::Contains("epsilon"), fewmul::error);
  model_with(1e-4f, 3.0e38f);
  CHECK_THROWS_WITH_AS(load_model(path), doctest::Contains(path.c_str()), fewmul::error);
  meta.input_scale = 0.0f;
  model_with(1e-4f, 1.0f);
  CHECK_THROWS_WITH_AS(load_model(path), doctest::Contains("scale"), fewmul::error);
  fs::remove(path);
}
