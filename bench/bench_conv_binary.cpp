// conv_binary against what it replaces in the same run: conv_binary/<isa>/<layer>/implicit vs .../im2col_gemm
// (im2col of the maps + gemm_binary on the im2col rows: the same bits). CIFAR-10 convnet layers at width
// 0.5, 16 images.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

struct conv_layer_shape {
  const char* name;
  std::size_t size, channels, outputs;
};
constexpr conv_layer_shape conv_layers[] = {
    {"32x32x64->64", 32, 64, 64}, {"16x16x128->128", 16, 128, 128}, {"8x8x256->256", 8, 256, 256}};
constexpr std::size_t conv_images = 16;

void conv_binary_bench(benchmark::State& state, isa which, conv_layer_shape l, bool implicit) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  if (!kernels::conv_binary_fits(l.size, l.channels, 3, caches)) return state.SkipWithError("does not fit");
  const std::size_t positions = conv_images * l.size * l.size, k_size = 9 * l.channels;
  const auto x = floats(conv_images * l.size * l.size * l.channels, 3);
  const auto sign = bits(k_size, l.outputs, 4);
  std::vector<float> cols(implicit ? 0 : positions * k_size), y(positions * l.outputs);
  bench_workspace workspace(k, caches);
  const std::size_t ldb = kernels::words_for(l.outputs);
  const auto start = bench_clock::now();
  for (auto _ : state) {
    if (implicit) {
      k.conv_binary({.x = x.data(),
                     .images = conv_images,
                     .height = l.size,
                     .width = l.size,
                     .channels = l.channels,
                     .kernel = 3,
                     .same_padding = true,
                     .p0 = 0,
                     .rows = positions,
                     .n = l.outputs,
                     .sign = sign.data(),
                     .ldb = ldb,
                     .c = y.data(),
                     .ldc = l.outputs,
                     .caches = caches,
                     .workspace = workspace.get()});
    } else {
      for (std::size_t b = 0; b < conv_images; ++b)  // im2col, "same" 3x3
        for (std::size_t oy = 0; oy < l.size; ++oy)
          for (std::size_t ox = 0; ox < l.size; ++ox)
            for (std::size_t t = 0; t < 9; ++t) {
              float* dst = cols.data() + ((b * l.size + oy) * l.size + ox) * k_size + t * l.channels;
              const long iy = static_cast<long>(oy + t / 3) - 1, ix = static_cast<long>(ox + t % 3) - 1;
              const bool inside =
                  iy >= 0 && ix >= 0 && iy < static_cast<long>(l.size) && ix < static_cast<long>(l.size);
              for (std::size_t c = 0; c < l.channels; ++c)
                dst[c] = inside
                             ? x[((b * l.size + static_cast<std::size_t>(iy)) * l.size + static_cast<std::size_t>(ix)) *
                                     l.channels +
                                 c]
                             : 0.0f;
            }
      k.gemm_binary({.m = positions,
                     .n = l.outputs,
                     .k = k_size,
                     .a = cols.data(),
                     .a_rs = k_size,
                     .a_cs = 1,
                     .bits = sign.data(),
                     .ldb = ldb,
                     .c = y.data(),
                     .ldc = l.outputs,
                     .caches = caches,
                     .workspace = workspace.get()});
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, shape{l.name, positions, l.outputs, k_size}, seconds_since(start), which, "binary");
}

}  // namespace

void register_conv_binary(isa which) {
  const std::string isa_text(isa_name(which));
  for (const conv_layer_shape& l : conv_layers)
    for (const bool implicit : {true, false})
      benchmark::RegisterBenchmark(
          ("conv_binary/" + isa_text + "/" + l.name + (implicit ? "/implicit" : "/im2col_gemm")).c_str(),
          conv_binary_bench, which, l, implicit)
          ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
