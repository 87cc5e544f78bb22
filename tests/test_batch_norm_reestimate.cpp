// Test-time batch-norm re-estimation: population statistics under the test-time weights, layer by layer,
// the same bits for any thread count, and what the trainer evaluates and exports.
#include <doctest/doctest.h>

#include <cmath>

#include "fewmul/train.hpp"
#include "layers/layer_io.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

struct trained {
  network net;
  dataset train_set, test_set;
  train_result result;
};

// One short run of `m` on blobs; `reestimate` examples as in train_config.
trained train_small(const network_architecture& arch, method m, std::size_t reestimate, std::size_t epochs = 1) {
  trained t{
      make_network(arch, dense_options_for(m), 5), blobs(600, arch.inputs(), 1), blobs(300, arch.inputs(), 2), {}};
  train_config config;
  config.training_method = m;
  config.epochs = epochs;
  config.batch = 50;
  config.validation = 100;
  config.threads = 2;
  config.bn_reestimate_examples = reestimate;
  t.result = train(t.net, t.train_set, t.test_set, config);
  return t;
}

network_architecture mlp(std::size_t inputs) {
  network_architecture a;
  a.height = 1;
  a.width = static_cast<std::uint32_t>(inputs);
  a.channels = 1;
  a.hidden = {48, 30};
  a.outputs = 3;
  return a;
}

// 6x6 images: conv 4 -> pool -> batch norm over 4 channels x 9 positions -> conv 6 -> ..., dense 16, 3.
network_architecture small_convnet() {
  network_architecture a;
  a.height = 6;
  a.width = 6;
  a.channels = 1;
  a.conv = {4, 0, 6};
  a.hidden = {16};
  a.outputs = 3;
  return a;
}

// Largest gap, relative to the channel's standard deviation, between each batch norm's inference
// statistics (the E[Wb] ones with `expected`) and the population mean and variance of its input computed
// directly in double precision: the whole of `data` run in one batch, layer by layer, in inference mode.
double gap_to_population(network& net, const dataset& data, const runtime& rt, bool expected) {
  const step_context ctx{.rt = rt,
                         .kernels = kernels::active_kernels(),
                         .seed = 0,
                         .step = 0,
                         .training = false,
                         .expected_weights = expected};
  matrix x(data.size(), data.features);
  x.data = data.x;
  double worst = 0;
  int batch_norms = 0;
  for (const auto& l : net.layers()) {
    detail::batch_norm_view v;
    if (detail::batch_norm_inference_view(*l, v, expected)) {
      ++batch_norms;
      const std::size_t values = x.rows * v.positions, c = v.channels;
      for (std::size_t f = 0; f < c; ++f) {
        double sum = 0, squares = 0;
        for (std::size_t r = 0; r < values; ++r) sum += x.data[r * c + f];
        const double mean = sum / static_cast<double>(values);
        for (std::size_t r = 0; r < values; ++r) {
          const double d = x.data[r * c + f] - mean;
          squares += v.shift ? d * ap2(static_cast<float>(d)) : d * d;  // shift BN: Algorithm 3's C * AP2(C)
        }
        const double var = squares / static_cast<double>(values), scale = std::sqrt(var) + 1e-6;
        worst = std::max({worst, std::fabs(v.mean[f] - mean) / scale, std::fabs(v.var[f] - var) / (scale * scale)});
      }
    }
    matrix y;
    l->forward(x, y, ctx);
    x = std::move(y);
  }
  REQUIRE(batch_norms > 0);
  return worst;
}

// Every batch norm's inference mean and variance (the E[Wb] ones with `expected`), concatenated.
std::vector<float> statistics(const network& net, bool expected) {
  std::vector<float> out;
  for (const auto& l : net.layers()) {
    detail::batch_norm_view v;
    if (!detail::batch_norm_inference_view(*l, v, expected)) continue;
    out.insert(out.end(), v.mean, v.mean + v.channels);
    out.insert(out.end(), v.var, v.var + v.channels);
  }
  return out;
}

}  // namespace

TEST_CASE("re-estimated batch norm holds the population statistics of its input under the test-time weights") {
  struct variant {
    const char* name;
    network_architecture arch;
    method m;
  };
  network_architecture shifted = mlp(20);
  shifted.shift_batch_norm = true;
  for (const variant& c :
       {variant{"mlp bc+qbp", mlp(20), method::bc_qbp}, variant{"convnet tc", small_convnet(), method::tc},
        variant{"mlp shift-BN bc-stoch", shifted, method::bc_stoch}}) {
    CAPTURE(c.name);
    // Running averages from training under sampled weights (no re-estimation) are the starting point.
    trained t = train_small(c.arch, c.m, 0);
    const runtime rt(2);
    const dataset data = blobs(2500, c.arch.inputs(), 3);  // three chunks of the re-estimation pass
    // The check can fail: the training running averages are far from the test-time statistics.
    CHECK(gap_to_population(t.net, data, rt, false) > 1e-2);
    CHECK(gap_to_population(t.net, data, rt, true) > 1e-2);
    const std::vector<float> running = statistics(t.net, false);

    reestimate_batch_norm(t.net, data, rt, true);
    CHECK(statistics(t.net, false) == running);  // E[Wb] statistics are kept apart
    CHECK(gap_to_population(t.net, data, rt, true) < 1e-5);
    CHECK(gap_to_population(t.net, data, rt, false) > 1e-2);

    reestimate_batch_norm(t.net, data, rt, false);
    CHECK(gap_to_population(t.net, data, rt, false) < 1e-5);
    CHECK(gap_to_population(t.net, data, rt, true) < 1e-5);  // untouched by the deterministic pass

    // Only the first `examples` examples count.
    reestimate_batch_norm(t.net, data, rt, false, 700);
    CHECK(gap_to_population(t.net, data.slice(0, 700), rt, false) < 1e-5);
  }
}

TEST_CASE("batch-norm re-estimation gives the same bits for 1, 2 and 7 threads and any cache size") {
  for (const auto& arch : {mlp(20), small_convnet()}) {
    trained t = train_small(arch, method::bc_qbp, 0);
    const dataset data = blobs(2300, arch.inputs(), 4);
    const auto state = t.net.snapshot();
    auto run = [&](int threads, std::size_t cache_bytes) {
      t.net.restore(state);
      const runtime rt(threads);
      reestimate_batch_norm(t.net, data, rt, true, 0, cache_bytes);
      reestimate_batch_norm(t.net, data, rt, false, 0, cache_bytes);
      std::vector<float> both = statistics(t.net, true), deterministic = statistics(t.net, false);
      both.insert(both.end(), deterministic.begin(), deterministic.end());
      return both;
    };
    const auto reference = run(1, 0);  // nothing cached: every layer recomputed from the data
    CHECK(same_bits(reference, run(2, 0)));
    CHECK(same_bits(reference, run(7, std::size_t{256} << 20)));
    CHECK(same_bits(reference, run(2, 150'000)));  // part of the chunks cached
  }
}

TEST_CASE("the trainer evaluates and keeps the statistics re-estimated on its training prefix") {
  // 500 training examples, 300 of them for re-estimation.
  trained t = train_small(mlp(20), method::bc_qbp, 300, 3);
  const runtime rt(2);
  // After train(): E[Wb] inference reproduces the best epoch's test error, the deterministic one the
  // packed error (what an exported model evaluates to, tests/test_model.cpp).
  CHECK(evaluate(t.net, t.test_set, rt, true) == t.result.test_error_at_best);
  CHECK(evaluate(t.net, t.test_set, rt, false) == t.result.test_error_packed_at_best);
  CHECK(t.result.bn_reestimate_seconds > 0.0);
  // The statistics it holds are those of the best weights over the first 300 training examples.
  const auto expected = statistics(t.net, true), deterministic = statistics(t.net, false);
  reestimate_batch_norm(t.net, t.train_set.slice(0, 300), rt, true);
  reestimate_batch_norm(t.net, t.train_set.slice(0, 300), rt, false);
  CHECK(same_bits(expected, statistics(t.net, true)));
  CHECK(same_bits(deterministic, statistics(t.net, false)));
  CHECK(!same_bits(expected, deterministic));

  // Off (0): nothing is re-estimated and E[Wb] inference uses the running averages again.
  trained off = train_small(mlp(20), method::bc_qbp, 0, 3);
  CHECK(same_bits(statistics(off.net, true), statistics(off.net, false)));
  CHECK(off.result.bn_reestimate_seconds == 0.0);
  CHECK(!same_bits(statistics(off.net, false), deterministic));
}
