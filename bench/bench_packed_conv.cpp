// The BNN paper's CIFAR-10 convnet (2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-1024FC-1024FC-10, widths scaled)
// at inference, batch 1 and 256: the fp32 network, the BNN network (XNOR-popcount convolutions, float
// activations between layers) and packed_network (bit planes end to end), timed in the same process.
// speedup_vs_fp32 divides the fp32 network's time, measured just before with the same inputs.
// bench/peer_pytorch.py --suites bnnconv times PyTorch fp32 on the same net.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <memory>

#include "fewmul/kernels.hpp"
#include "fewmul/packed_network.hpp"
#include "fewmul/train.hpp"
#include "inference_bench.hpp"

namespace {

using namespace fewmul;

enum class convnet_variant { fp32, bnn_network, bnn_packed };

void inference_convnet_bench(benchmark::State& state, convnet_variant v) {
  const double width = static_cast<double>(state.range(0)) / 100.0;
  const std::size_t batch = static_cast<std::size_t>(state.range(1));
  runtime rt(static_cast<int>(state.range(2)));
  network_architecture arch = convnet_preset(32, 32, 3, 10, width);
  matrix x(batch, arch.inputs());
  // Inputs in [-1, 1] as the BNN paper scales CIFAR-10 (Train-time/cifar10.py): the first layer's float path.
  for (std::size_t i = 0; i < x.data.size(); ++i)
    x.data[i] = static_cast<float>((i * 7919) % 255) * (2.0f / 255.0f) - 1.0f;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false};
  arch.act = activation::relu;
  network fp32 = make_network(arch, dense_options_for(method::fp32), 1);
  const int repeats = batch == 1 ? 20 : 1;
  const double fp32_seconds = fewmul_bench::seconds_per_run([&] { fp32.forward(x, ctx); }, repeats);
  network bnn;
  if (v != convnet_variant::fp32) {
    arch.act = activation::sign;
    bnn = make_network(arch, dense_options_for(method::bnn), 1);
  }
  network& net = v == convnet_variant::fp32 ? fp32 : bnn;
  std::unique_ptr<packed_network> packed;
  if (v == convnet_variant::bnn_packed) packed = std::make_unique<packed_network>(net);
  fewmul_bench::time_inference(state, net, packed.get(), x, rt, ctx, fp32_seconds);
}

const int registered = [] {
  const std::pair<convnet_variant, const char*> variants[] = {{convnet_variant::fp32, "fp32"},
                                                              {convnet_variant::bnn_network, "bnn_network"},
                                                              {convnet_variant::bnn_packed, "bnn_packed"}};
  for (const auto& [v, name] : variants)
    benchmark::RegisterBenchmark((std::string("inference_convnet/") + name).c_str(), inference_convnet_bench, v)
        ->ArgNames({"width_pct", "batch", "threads"})
        ->ArgsProduct({{50, 100}, {1, 256}, {0}})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  return 0;
}();

}  // namespace
