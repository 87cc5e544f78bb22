// max_pool: 2x2 max-pooling forward and backward over a minibatch of channel-last maps,
// max_pool/<isa>/<forward|backward>/<height>x<width>x<channels>; bytes/s counts the arrays each pass reads
// and writes (x and y forward; x, dy and dx backward).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

struct pool_shape {
  std::size_t height, width, channels;
};

void max_pool_bench(benchmark::State& state, isa which, bool backward, pool_shape s) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const std::size_t images = 200, in = s.height * s.width * s.channels, out = in / 4;
  std::vector<float> x = floats(images * in, 1), y(images * out), dy = floats(images * out, 2), dx(images * in);
  kernels::max_pool_params p{.images = images, .height = s.height, .width = s.width, .channels = s.channels};
  p.x = x.data();
  p.y = y.data();
  p.dy = dy.data();
  p.dx = dx.data();
  for (auto _ : state) {
    (backward ? k.max_pool_backward : k.max_pool_forward)(p);
    benchmark::ClobberMemory();
  }
  const double floats_moved = backward ? 2.0 * in + out : in + out;
  state.counters["bytes_per_s"] = benchmark::Counter(
      4.0 * floats_moved * images * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace

// The pooled maps of the BNN paper's CIFAR-10 convnet at width 0.5 (32x32x64, 16x16x128, 8x8x256).
void register_max_pool(isa which) {
  const std::string isa_text(isa_name(which));
  for (const pool_shape s : {pool_shape{32, 32, 64}, pool_shape{16, 16, 128}, pool_shape{8, 8, 256}})
    for (const bool backward : {false, true})
      benchmark::RegisterBenchmark(
          ("max_pool/" + isa_text + (backward ? "/backward/" : "/forward/") + std::to_string(s.height) + "x" +
           std::to_string(s.width) + "x" + std::to_string(s.channels))
              .c_str(),
          max_pool_bench, which, backward, s)
          ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
