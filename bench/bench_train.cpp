// End to end: training throughput of the paper's MNIST MLP per method, and inference latency.
// Synthetic inputs of MNIST's shape and sparsity (about 80% zero pixels) keep the suite independent of
// the data files.
#include <benchmark/benchmark.h>

#include <random>

#include "fewmul/train.hpp"

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
    if (m == method::bnn) config.optimizer = optimizer_kind::adam;
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
  const step_context ctx{rt, kernels::active_kernels(), 0, 0, false};
  net.forward(x, ctx);  // first call sizes the activation buffers and packs the weights
  for (auto _ : state) benchmark::DoNotOptimize(net.forward(x, ctx).data.data());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}

const int registered = [] {
  for (method m :
       {method::fp32, method::bc, method::bc_stoch, method::tc, method::bc_qbp, method::tc_qbp, method::bnn}) {
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
