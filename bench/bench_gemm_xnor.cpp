// gemm_xnor on the shared shapes: gemm_xnor/<isa>/<shape>.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

// XNOR-popcount GEMM on ±1 bits: MAC/s counts one ±1 multiply-accumulate per bit pair.
void xnor_bench(benchmark::State& state, isa which, shape s) {
  if (skip_unsupported(state, which, &s)) return;
  const auto& k = kernels::kernels_for(which);
  const std::size_t words = kernels::words_for(s.k);
  const auto a = bits(s.m, s.k, 7), bt = bits(s.n, s.k, 8);  // bt[w][n]: any bits serve for timing
  std::vector<std::int32_t> c(s.m * s.n);
  const auto start = bench_clock::now();
  for (auto _ : state) {
    k.gemm_xnor({.m = s.m,
                 .n = s.n,
                 .k_words = words,
                 .k_bits = static_cast<std::int32_t>(s.k),
                 .a = a.data(),
                 .lda = words,
                 .bt = bt.data(),
                 .ldbt = s.n,
                 .c = c.data(),
                 .ldc = s.n});
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, "xnor");
}

}  // namespace

void register_gemm_xnor(isa which) {
  const std::string isa_text(isa_name(which));
  for (const shape& s : gemm_shapes)
    benchmark::RegisterBenchmark(("gemm_xnor/" + isa_text + "/" + s.name).c_str(), xnor_bench, which, s)
        ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
