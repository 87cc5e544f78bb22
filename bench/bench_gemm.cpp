// gemm_f32, gemm_binary, gemm_ternary and gemm_shift on the shared shapes: one driver, rows named
// gemm_<kind>/<isa>/<shape>.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

void gemm_bench(benchmark::State& state, isa which, shape s, const std::string& kind) {
  if (skip_unsupported(state, which, &s)) return;
  const auto& k = kernels::kernels_for(which);
  const auto a = floats(s.m * s.k, 1), b = floats(s.k * s.n, 2);
  const auto w = bits(s.k, s.n, 3);
  auto nz = bits(s.k, s.n, 4);
  auto sign = w;
  for (std::size_t i = 0; i < sign.size(); ++i) sign[i] &= nz[i];
  std::vector<float> c(s.m * s.n);
  const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  bench_workspace workspace(k, caches);
  void* ws = workspace.get();
  // Shift: the m x k codes of inputs that are zero half the time, as after a ReLU.
  auto relu = a;
  std::mt19937 coin(7);
  for (auto& x : relu)
    if (coin() & 1u) x = 0.0f;
  std::vector<std::int8_t> codes(s.m * s.k);
  k.quantize_pow2(relu.data(), relu.size(), codes.data(), -4, 3, 1, 0);
  double nonzero = 0;
  for (std::int8_t code : codes) nonzero += code != 0 ? 1.0 : 0.0;
  nonzero /= static_cast<double>(codes.size());
  const std::size_t ldb = kernels::words_for(s.n);
  const auto start = bench_clock::now();
  for (auto _ : state) {
    if (kind == "f32")
      k.gemm_f32({.m = s.m,
                  .n = s.n,
                  .k = s.k,
                  .a = a.data(),
                  .a_rs = s.k,
                  .a_cs = 1,
                  .b = b.data(),
                  .ldb = s.n,
                  .c = c.data(),
                  .ldc = s.n,
                  .caches = caches,
                  .workspace = ws});
    else if (kind == "binary")
      k.gemm_binary({.m = s.m,
                     .n = s.n,
                     .k = s.k,
                     .a = a.data(),
                     .a_rs = s.k,
                     .a_cs = 1,
                     .bits = w.data(),
                     .ldb = ldb,
                     .c = c.data(),
                     .ldc = s.n,
                     .caches = caches,
                     .workspace = ws});
    else if (kind == "ternary")
      k.gemm_ternary({.m = s.m,
                      .n = s.n,
                      .k = s.k,
                      .a = a.data(),
                      .a_rs = s.k,
                      .a_cs = 1,
                      .sign = sign.data(),
                      .nonzero = nz.data(),
                      .ldb = ldb,
                      .c = c.data(),
                      .ldc = s.n,
                      .caches = caches,
                      .workspace = ws});
    else
      k.gemm_shift({.m = s.m,
                    .n = s.n,
                    .k = s.k,
                    .q = codes.data(),
                    .q_rs = s.k,
                    .q_cs = 1,
                    .b = b.data(),
                    .ldb = s.n,
                    .c = c.data(),
                    .c_rs = s.n,
                    .c_cs = 1,
                    .caches = caches,
                    .workspace = ws});
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, kind, kind == "shift" ? nonzero : 1.0);
}

}  // namespace

void register_gemm(isa which) {
  const std::string isa_text(isa_name(which));
  for (const shape& s : gemm_shapes)
    for (const char* kind : {"f32", "binary", "ternary", "shift"})
      benchmark::RegisterBenchmark(("gemm_" + std::string(kind) + "/" + isa_text + "/" + s.name).c_str(), gemm_bench,
                                   which, s, std::string(kind))
          ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
