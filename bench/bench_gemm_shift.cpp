// gemm_shift as the QBP weight gradient calls it: gemm_shift_weight_gradient/<isa>/mnist_l2_b200.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

// gemm_shift as the layers call it for the QBP weight gradient of the MLP's hidden layer at batch 200:
// ΔWᵀ[in][out] = Σ_r code(x[r][in]) δ[r][out], the codes read through a transposed view of the batch's
// [200][1024] codes (half zero) and ΔW written through strides into [out][in].
void shift_weight_gradient_bench(benchmark::State& state, isa which) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const shape s{"mnist_l2_b200", 1024, 1024, 200};
  auto x = floats(s.k * s.m, 11);
  std::mt19937 coin(5);
  for (auto& v : x)
    if (coin() & 1u) v = 0.0f;
  std::vector<std::int8_t> codes(x.size());
  k.quantize_pow2(x.data(), x.size(), codes.data(), -4, 3, 1, 0);
  const auto delta = floats(s.k * s.n, 12);
  std::vector<float> grad(s.m * s.n);
  const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  bench_workspace workspace(k, caches);
  void* ws = workspace.get();
  const auto start = bench_clock::now();
  for (auto _ : state) {
    k.gemm_shift({.m = s.m,
                  .n = s.n,
                  .k = s.k,
                  .q = codes.data(),
                  .q_rs = 1,
                  .q_cs = s.m,
                  .b = delta.data(),
                  .ldb = s.n,
                  .c = grad.data(),
                  .c_rs = 1,
                  .c_cs = s.m,
                  .caches = caches,
                  .workspace = ws});
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, "shift", 0.5);
}

}  // namespace

void register_gemm_shift_weight_gradient(isa which) {
  const std::string isa_text(isa_name(which));
  benchmark::RegisterBenchmark(("gemm_shift_weight_gradient/" + isa_text + "/mnist_l2_b200").c_str(),
                               shift_weight_gradient_bench, which)
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
