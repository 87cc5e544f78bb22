// quantize_pow2: quantize_pow2/<isa>/200x1024.
#include <benchmark/benchmark.h>

#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

void quantize_bench(benchmark::State& state, isa which) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const auto x = floats(200 * 1024, 6);
  std::vector<std::int8_t> codes(x.size());
  for (auto _ : state) {
    k.quantize_pow2(x.data(), x.size(), codes.data(), -4, 3, 3, 0);
    benchmark::DoNotOptimize(codes.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * x.size()));
}

}  // namespace

void register_quantize_pow2(isa which) {
  const std::string isa_text(isa_name(which));
  benchmark::RegisterBenchmark(("quantize_pow2/" + isa_text + "/200x1024").c_str(), quantize_bench, which)
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
