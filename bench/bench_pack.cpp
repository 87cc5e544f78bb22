// pack_binary and pack_ternary: pack_<binary|ternary>_<mode>/<isa>/1024x1024.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

void pack_bench(benchmark::State& state, isa which, bool ternary, kernels::sample_mode mode) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const std::size_t rows = 1024, cols = 1024;
  const auto w = floats(rows * cols, 5);
  std::vector<std::uint64_t> s(rows * kernels::words_for(cols)), z(s.size());
  for (auto _ : state) {
    if (ternary)
      k.pack_ternary(w.data(), rows, cols, cols, s.data(), z.data(), kernels::words_for(cols), mode, 9);
    else
      k.pack_binary(w.data(), rows, cols, cols, s.data(), kernels::words_for(cols), mode, 9);
    benchmark::DoNotOptimize(s.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rows * cols));
}

}  // namespace

void register_pack(isa which) {
  const std::string isa_text(isa_name(which));
  for (bool ternary : {false, true})
    for (auto mode : {kernels::sample_mode::deterministic, kernels::sample_mode::stochastic})
      benchmark::RegisterBenchmark(
          (std::string(ternary ? "pack_ternary" : "pack_binary") +
           (mode == kernels::sample_mode::stochastic ? "_stochastic/" : "_deterministic/") + isa_text + "/1024x1024")
              .c_str(),
          pack_bench, which, ternary, mode)
          ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
