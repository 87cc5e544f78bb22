// Issue 15: initialization, learning-rate schedules and presets after the papers each method comes from.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"
#include "fewmul/runtime.hpp"
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

TEST_CASE("the default schedule is a cosine per minibatch reaching lr over 100 only at the end of the run") {
  train_config c;
  c.lr = 1.0f;
  c.epochs = 2;
  const std::size_t batches = 250;
  const auto cosine = [](double t) { return 0.01 + 0.99 * 0.5 * (1.0 + std::cos(std::acos(-1.0) * t)); };
  CHECK(learning_rate_at(c, 1, 0, batches) == doctest::Approx(1.0));
  CHECK(learning_rate_at(c, 1, 125, batches) == doctest::Approx(cosine(0.25)));
  CHECK(learning_rate_at(c, 1, 125, batches) > 0.85f);                  // a short run's first epoch stays near lr
  CHECK(learning_rate_at(c, 2, 0, batches) == doctest::Approx(0.505));  // half-way: half, not the floor
  CHECK(learning_rate_at(c, 2, batches - 1, batches) > 0.01f);
  CHECK(learning_rate_at(c, 2, batches - 1, batches) == doctest::Approx(cosine(499.0 / 500.0)));
  for (std::size_t b = 1; b < batches; ++b)
    CHECK(learning_rate_at(c, 1, b, batches) < learning_rate_at(c, 1, b - 1, batches));
  // The schedule before issue 15 (resumed old checkpoints): the whole second epoch at the floor.
  c.schedule = lr_schedule::per_epoch_floor;
  CHECK(learning_rate_at(c, 2, 0, batches) == doctest::Approx(0.01));
  CHECK(learning_rate_at(c, 1, 100, batches) == 1.0f);
  // An explicit per-epoch factor overrides every schedule.
  c.schedule = lr_schedule::continuous;
  c.lr_decay = 0.5f;
  CHECK(learning_rate_at(c, 3, 7, batches) == doctest::Approx(0.25));
}

TEST_CASE("the paper schedule decays per epoch by the authors' factor towards the final rate") {
  const paper_preset p = paper_preset_for("mnist", method::bc_qbp);
  CHECK(p.lr_start == 0.3f);
  CHECK(p.lr_end == 0.01f);
  CHECK(p.epochs == 1000);
  CHECK(p.batch == 200);
  train_config c;
  c.schedule = lr_schedule::paper;
  c.lr = p.lr_start;
  c.lr_end = p.lr_end;
  c.epochs = p.epochs;
  const double factor = std::pow(0.01 / 0.3, 1.0 / 1000.0);  // hantek/BinaryConnect: LR_decay
  CHECK(learning_rate_at(c, 1, 0, 250) == doctest::Approx(0.3));
  CHECK(learning_rate_at(c, 1, 249, 250) == learning_rate_at(c, 1, 0, 250));  // constant within an epoch
  CHECK(learning_rate_at(c, 2, 0, 250) == doctest::Approx(0.3 * factor));
  CHECK(learning_rate_at(c, 1000, 0, 250) == doctest::Approx(0.3 * std::pow(factor, 999)));
  CHECK(learning_rate_at(c, 1000, 0, 250) > 0.01f);
  c.epochs = 2;  // a shortened paper run spans the same range
  CHECK(learning_rate_at(c, 2, 0, 250) == doctest::Approx(0.3 * std::sqrt(0.01 / 0.3)));
  CHECK_NOTHROW(validate(c));
  c.lr_end = 0.0f;
  CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("--lr-end"), fewmul::error);
  c.lr_end = 0.5f;  // above the starting rate
  CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("--lr-end"), fewmul::error);
}

TEST_CASE("paper presets follow each method's paper and dataset") {
  CHECK(paper_preset_for("cifar10", method::tc).epochs == 300);
  CHECK(paper_preset_for("cifar10", method::tc).lr_end == 0.001f);
  CHECK(paper_preset_for("cifar10", method::tc).batch == 100);
  CHECK(paper_preset_for("svhn", method::bc).epochs == 60);
  CHECK(paper_preset_for("svhn", method::fp32).optimizer == optimizer_kind::sgd);
  const paper_preset bnn = paper_preset_for("mnist", method::bnn);
  CHECK(bnn.optimizer == optimizer_kind::adam);
  CHECK(bnn.lr_start == 0.003f);
  CHECK(bnn.batch == 100);
  CHECK(bnn.init == lr_scale_kind::binary_net);
  CHECK(paper_preset_for("cifar10", method::qnn).batch == 50);
  CHECK(paper_preset_for("svhn", method::bnn).lr_end == 1e-6f);
  CHECK_THROWS_AS(paper_preset_for("imagenet", method::bc), fewmul::error);
}

TEST_CASE("Lin et al.'s convnets default to the authors' per-epoch decay and everything else to the cosine") {
  // hantek/BinaryConnect cifar10.py: LR_decay = (LR_fin / LR)^(1 / n_epoch) = (0.001 / 0.3)^(1 / 300);
  // svhn.py the same over 60 epochs.
  for (method m : {method::fp32, method::bc, method::bc_stoch, method::tc, method::bc_qbp, method::tc_qbp}) {
    CAPTURE(method_name(m));
    CHECK(default_lr_decay("cifar10", m) == doctest::Approx(std::pow(0.001 / 0.3, 1.0 / 300.0)).epsilon(1e-6));
    CHECK(default_lr_decay("cifar10", m) == doctest::Approx(0.98116).epsilon(1e-4));
    CHECK(default_lr_decay("svhn", m) == doctest::Approx(std::pow(0.001 / 0.3, 1.0 / 60.0)).epsilon(1e-6));
    CHECK(default_lr_decay("mnist", m) == 0.0f);
  }
  for (method m : {method::bnn, method::qnn})
    for (const char* dataset : {"mnist", "cifar10", "svhn"}) CHECK(default_lr_decay(dataset, m) == 0.0f);
  CHECK_THROWS_AS(default_lr_decay("imagenet", method::bc), fewmul::error);
  // A 2-epoch CIFAR-10 run at that factor stays at the authors' rate, constant within each epoch.
  train_config c;
  c.lr = 0.3f;
  c.epochs = 2;
  c.lr_decay = default_lr_decay("cifar10", method::bc_stoch);
  CHECK(learning_rate_at(c, 1, 0, 450) == doctest::Approx(0.3));
  CHECK(learning_rate_at(c, 1, 449, 450) == doctest::Approx(0.3));
  CHECK(learning_rate_at(c, 2, 449, 450) == doctest::Approx(0.3 * 0.98116).epsilon(1e-4));
}

TEST_CASE("the exponent histogram counts every input value of every weight layer once") {
  network net = make_mlp(12, {16}, 3, dense_options_for(method::bc_qbp), activation::relu, 3);
  dataset d;
  d.features = 12;
  for (std::size_t i = 0; i < 50 * 12; ++i) {
    d.x.push_back(i % 12 == 0 ? 0.0f : static_cast<float>(i % 7 + 1) * 0.25f);  // exponents -2..0, some zeros
    if (i % 12 == 0) d.y.push_back(static_cast<std::uint8_t>(i % 3));
  }
  const runtime rt(1);
  const auto before = net.snapshot();
  const std::vector<layer_exponents> h = exponent_histogram(net, d, rt, 40);
  CHECK(net.snapshot() == before);  // no state moved
  REQUIRE(h.size() == 2);           // the inputs of both dense layers
  const auto total = [](const layer_exponents& l) {
    std::uint64_t n = l.zeros;
    for (auto c : l.counts) n += c;
    return n;
  };
  CHECK(total(h[0]) == 40 * 12);
  CHECK(total(h[1]) == 40 * 16);
  CHECK(h[0].zeros == 40);
  // 0.25 (2^-2), 0.5 and 0.75 (2^-1), 1.0 .. 1.75 (2^0): one of 7 values each per row position
  CHECK(h[0].counts[static_cast<std::size_t>(-2 - h[0].min_exponent)] > 0);
  CHECK(h[0].counts[static_cast<std::size_t>(1 - h[0].min_exponent)] == 0);
  CHECK(h[0].layer.find("dense 12->16") != std::string::npos);
  const std::string path = (std::filesystem::temp_directory_path() / "fewmul_histogram_test.json").string();
  write_exponent_histogram(path, h, 3, "bc+qbp");
  std::ifstream in(path);
  const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(json.find("\"epoch\": 3") != std::string::npos);
  CHECK(json.find("\"zeros\": 40") != std::string::npos);
  std::filesystem::remove(path);
  CHECK_THROWS_AS(write_exponent_histogram("/nonexistent-dir/h.json", h, 3, "bc"), fewmul::error);
}

TEST_CASE("the BNN MNIST preset drops 20% of the inputs and half the hidden units, batch 100, Adam") {
  for (method m : {method::bnn, method::qnn}) {
    const paper_preset p = paper_preset_for("mnist", m);
    // MatthieuCourbariaux/BinaryNet Train-time/mnist.py: dropout_in = .2, dropout_hidden = .5, batch_size = 100.
    CHECK(p.dropout_input == 0.2f);
    CHECK(p.dropout_hidden == 0.5f);
    CHECK(p.batch == 100);
    CHECK(p.optimizer == optimizer_kind::adam);
    CHECK(p.init == lr_scale_kind::binary_net);
  }
  for (const char* dataset : {"mnist", "cifar10", "svhn"}) {  // Lin et al.'s scripts: dropout 1. (none)
    CHECK(paper_preset_for(dataset, method::bc_qbp).dropout_input == 0.0f);
    CHECK(paper_preset_for(dataset, method::bc_qbp).dropout_hidden == 0.0f);
  }
}

TEST_CASE("the method table: one row per method in enum order, names parse back, options follow the row") {
  const auto& table = methods();
  REQUIRE(table.size() == static_cast<std::size_t>(method::qnn) + 1);
  for (std::size_t i = 0; i < table.size(); ++i) {
    const method_traits& t = table[i];
    CAPTURE(t.name);
    CHECK(static_cast<std::size_t>(t.id) == i);
    CHECK(&traits_of(t.id) == &t);
    CHECK(parse_method(t.name) == t.id);
    CHECK(method_name(t.id) == t.name);
    const dense_options o = dense_options_for(t.id);
    CHECK(o.qbp == t.qbp);
    CHECK(o.training_sampling == t.training_sampling);
    CHECK(o.lr_scale == t.lr_scale);
    CHECK(default_activation(t.id) == t.default_activation);
    CHECK(mlp_preset_hidden(t.id) == std::vector<std::size_t>(3, t.mlp_hidden));
    // Presets follow the method's paper.
    CHECK(paper_preset_for("mnist", t.id).optimizer ==
          (t.paper == method_paper::hubara2017 ? optimizer_kind::adam : optimizer_kind::sgd));
  }
  CHECK(traits_of(method::bnn).paper == method_paper::hubara2017);
  CHECK(traits_of(method::tc_qbp).kind == weight_kind::ternary);
  CHECK_THROWS_WITH_AS(parse_method("bcqbp"), doctest::Contains("expected fp32, bc, bc-stoch"), error);
}
