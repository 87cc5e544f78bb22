// One benchmark per (kernel, ISA, shape), each defined in bench_<stem>.cpp and all registered here in one
// order. Counters: MAC/s (items_per_second) for the GEMMs, elements/s for packing and quantizing; when
// built with OpenBLAS, vs_openblas: this row's MAC/s divided by single-threaded OpenBLAS sgemm's on the
// same shape, measured in the same process; roofline: the fraction of this CPU's peak for the kernel's
// inner instruction mix (roofline.cpp, measured in the same process). gemm_shift's codes are zero half
// the time, as after a ReLU, and skipped; its roofline counts the products actually computed. Compare
// rows of one run with each other, never with another day's run.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"
#include "roofline.hpp"

#ifdef FEWMUL_BENCH_OPENBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename(void);
#endif

namespace fewmul_bench {

using namespace fewmul;

namespace {

// Which instruction mix each kernel's inner loop runs.
fewmul_bench::mix mix_of(const std::string& kind) {
  if (kind == "f32") return fewmul_bench::mix::f32_fma;
  if (kind == "binary") return fewmul_bench::mix::binary_lookup;
  if (kind == "ternary") return fewmul_bench::mix::ternary_lookup;
  if (kind == "shift") return fewmul_bench::mix::shift_add;
  return fewmul_bench::mix::xnor_popcount;
}

#ifdef FEWMUL_BENCH_OPENBLAS
// MAC/s of single-threaded OpenBLAS sgemm on `s`, measured once per process: the float reference every
// row of that shape is divided by.
double openblas_rate(const shape& s) {
  static std::map<std::string, double> rates;
  if (auto it = rates.find(s.name); it != rates.end()) return it->second;
  openblas_set_num_threads(1);
  const auto a = floats(s.m * s.k, 1), b = floats(s.k * s.n, 2);
  std::vector<float> c(s.m * s.n);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(s.m), static_cast<int>(s.n),
                static_cast<int>(s.k), 1.0f, a.data(), static_cast<int>(s.k), b.data(), static_cast<int>(s.n), 0.0f,
                c.data(), static_cast<int>(s.n));
  };
  run();
  std::size_t calls = 0;
  const auto start = bench_clock::now();
  do {
    run();
    ++calls;
  } while (seconds_since(start) < 0.3);
  return rates[s.name] = double(calls) * double(s.m) * double(s.n) * double(s.k) / seconds_since(start);
}

void openblas_bench(benchmark::State& state, shape s) {
  openblas_set_num_threads(1);
  const auto a = floats(s.m * s.k, 1), b = floats(s.k * s.n, 2);
  std::vector<float> c(s.m * s.n);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(s.m), static_cast<int>(s.n),
                static_cast<int>(s.k), 1.0f, a.data(), static_cast<int>(s.k), b.data(), static_cast<int>(s.n), 0.0f,
                c.data(), static_cast<int>(s.n));
    benchmark::DoNotOptimize(c.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * s.m * s.n * s.k));
}
#endif

}  // namespace

std::vector<float> floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

std::vector<std::uint64_t> bits(std::size_t rows, std::size_t cols, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::vector<std::uint64_t> v(rows * kernels::words_for(cols));
  for (auto& x : v) x = gen();
  return v;
}

bool skip_unsupported(benchmark::State& state, isa which, const shape* s) {
  if (!isa_supported(which)) {
    state.SkipWithError(("ISA " + std::string(isa_name(which)) + " not supported on this CPU").c_str());
    return true;
  }
  if (which == isa::scalar && s != nullptr && double(s->m) * double(s->n) * double(s->k) > 2e9) {
    state.SkipWithError("the bit-at-a-time reference would take minutes on this shape");
    return true;
  }
  return false;
}

void report_macs(benchmark::State& state, const shape& s, double seconds, isa which, const std::string& kind,
                 double computed) {
  const double macs = double(state.iterations()) * double(s.m) * double(s.n) * double(s.k);
  state.SetItemsProcessed(static_cast<std::int64_t>(macs));
  const double peak = fewmul_bench::peak_products_per_second(mix_of(kind), which);
  if (seconds > 0 && peak > 0) state.counters["roofline"] = macs * computed / seconds / peak;
#ifdef FEWMUL_BENCH_OPENBLAS
  if (seconds > 0) state.counters["vs_openblas"] = macs / seconds / openblas_rate(s);
#else
  (void)seconds;
#endif
}

namespace {

const int registered = [] {
#ifdef FEWMUL_BENCH_OPENBLAS
  // OPENBLAS_CORETYPE (set on some machines for old OpenBLAS builds) can hold OpenBLAS to an older kernel:
  // the vs_openblas ratios are against the core named here.
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  for (const shape& s : gemm_shapes)
    benchmark::RegisterBenchmark(("sgemm_openblas/" + std::string(s.name)).c_str(), openblas_bench, s)
        ->Unit(benchmark::kMicrosecond);
#endif
  for (isa which : {isa::scalar, isa::sse4_2, isa::avx2, isa::avx512bw, isa::avx512vpopcntdq, isa::neon64}) {
    register_gemm(which);
    register_gemm_xnor(which);
    register_weight_gradient(which);
    register_pack(which);
    register_quantize_pow2(which);
    register_conv_binary(which);
    register_update_weights(which);
    register_max_pool(which);
    register_batch_norm(which);
  }
  return 0;
}();

}  // namespace
}  // namespace fewmul_bench
