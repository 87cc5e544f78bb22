// End to end: training throughput of the paper's MNIST MLP per method, and inference latency.
// Synthetic inputs of MNIST's shape and sparsity (about 80% zero pixels) keep the suite independent of
// the data files.
#include <benchmark/benchmark.h>

#include <cmath>
#include <functional>
#include <memory>
#include <random>

#include <chrono>

#include "fewmul/kernels.hpp"
#include "fewmul/packed_mlp.hpp"
#include "fewmul/train.hpp"
#include "inference_bench.hpp"

namespace {

using namespace fewmul;

dataset synthetic_mnist(std::size_t n) {
  dataset d;
  d.features = 784;
  d.classes = 10;
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  d.x.resize(n * 784);
  for (auto& v : d.x) v = u(gen) < 0.8f ? 0.0f : u(gen);
  for (std::size_t i = 0; i < n; ++i) d.y.push_back(static_cast<std::uint8_t>(i % 10));
  return d;
}

void train_bench(benchmark::State& state, method m) {
  const dataset data = synthetic_mnist(10200), test = synthetic_mnist(10);
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
    network net = make_mlp(784, {1024, 1024, 1024}, 10, dense_options_for(m), default_activation(m), 1);
    train_config config;
    config.training_method = m;
    config.lr = default_learning_rate(m);
    if (m == method::bnn || m == method::qnn) config.optimizer = optimizer_kind::adam;
    config.epochs = 1;
    config.validation = 200;
    config.threads = threads;
    const train_result r = train(net, data, test, config);
    state.SetIterationTime(r.epochs.front().seconds);
    state.counters["images_per_s"] = r.epochs.front().images_per_second;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * 10000));
}

void inference_bench(benchmark::State& state, method m) {
  const std::size_t batch = static_cast<std::size_t>(state.range(0));
  network net = make_mlp(784, {1024, 1024, 1024}, 10, dense_options_for(m), default_activation(m), 1);
  runtime rt(static_cast<int>(state.range(1)));
  const dataset data = synthetic_mnist(batch);
  matrix x(batch, 784);
  x.data = data.x;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false};
  net.forward(x, ctx);  // first call sizes the activation buffers and packs the weights
  for (auto _ : state) benchmark::DoNotOptimize(net.forward(x, ctx).data.data());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}

// BNN paper's MNIST MLP 784-W-W-W-10 at inference, batch given: the float network, the BNN/QNN network
// (XNOR-popcount, float activations between layers) and packed_mlp (bit planes end to end, input
// bytes). speedup_vs_fp32 divides the fp32 network's time, measured in the same process just before.
enum class mlp_variant { fp32, bnn_network, bnn_packed, qnn2_packed };

void inference_mlp_bench(benchmark::State& state, mlp_variant v) {
  const std::size_t width = static_cast<std::size_t>(state.range(0)), batch = static_cast<std::size_t>(state.range(1));
  runtime rt(static_cast<int>(state.range(2)));
  dataset data = synthetic_mnist(batch);
  for (float& p : data.x) p = std::round(p * 255.0f) / 255.0f;  // bytes, as MNIST is
  matrix x(batch, 784);
  x.data = data.x;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false};
  const std::vector<std::size_t> hidden{width, width, width};
  network fp32 = make_mlp(784, hidden, 10, dense_options_for(method::fp32), activation::relu, 1);
  const int repeats = batch == 1 ? 200 : 3;
  const double fp32_seconds = fewmul_bench::seconds_per_run([&] { fp32.forward(x, ctx); }, repeats);
  const method m = v == mlp_variant::qnn2_packed ? method::qnn : method::bnn;
  network quantized;
  if (v != mlp_variant::fp32) quantized = make_mlp(784, hidden, 10, dense_options_for(m), default_activation(m), 1);
  network& net = v == mlp_variant::fp32 ? fp32 : quantized;
  std::unique_ptr<packed_mlp> packed;
  if (v == mlp_variant::bnn_packed || v == mlp_variant::qnn2_packed) packed = std::make_unique<packed_mlp>(net);
  fewmul_bench::time_inference(state, net, packed.get(), x, rt, ctx, fp32_seconds);
}

const int registered = [] {
  const std::pair<mlp_variant, const char*> variants[] = {{mlp_variant::fp32, "fp32"},
                                                          {mlp_variant::bnn_network, "bnn_network"},
                                                          {mlp_variant::bnn_packed, "bnn_packed"},
                                                          {mlp_variant::qnn2_packed, "qnn_w2a2_packed"}};
  for (const auto& [v, name] : variants)
    benchmark::RegisterBenchmark((std::string("inference_mlp/") + name).c_str(), inference_mlp_bench, v)
        ->ArgNames({"width", "batch", "threads"})
        ->Args({4096, 1, 1})
        ->Args({4096, 1000, 0})
        ->Args({1024, 1, 1})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  // Thread scaling of packed BNN inference: compare each row with threads:1 of the same run.
  benchmark::RegisterBenchmark("inference_mlp_threads/bnn_packed", inference_mlp_bench, mlp_variant::bnn_packed)
      ->ArgNames({"width", "batch", "threads"})
      ->ArgsProduct({{4096}, {1000}, {1, 2, 4, 8, 16}})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  for (method m : {method::fp32, method::bc, method::bc_stoch, method::tc, method::bc_qbp, method::tc_qbp, method::bnn,
                   method::qnn}) {
    const std::string name(method_name(m));
    benchmark::RegisterBenchmark(("train_epoch_10k/" + name).c_str(), train_bench, m)
        ->Arg(0)
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    if (m == method::bc_qbp)  // thread scaling: compare each row with threads:1 of the same run
      benchmark::RegisterBenchmark("train_epoch_10k_threads/bc+qbp", train_bench, m)
          ->ArgName("threads")
          ->Arg(1)
          ->Arg(2)
          ->Arg(4)
          ->Arg(8)
          ->Arg(16)
          ->Iterations(1)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("inference/" + name).c_str(), inference_bench, m)
        ->Args({1, 1})
        ->Args({10000, 0})
        ->Unit(benchmark::kMicrosecond);
  }
  return 0;
}();

}  // namespace
