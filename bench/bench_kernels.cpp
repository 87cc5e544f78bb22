// One benchmark per (kernel, ISA, shape). Counters: MAC/s (items_per_second) for the GEMMs, elements/s
// for packing and quantizing; when built with OpenBLAS, vs_openblas: this row's MAC/s divided by
// single-threaded OpenBLAS sgemm's on the same shape, measured in the same process; roofline: the
// fraction of this CPU's peak for the kernel's inner instruction mix (roofline.cpp, measured in the same
// process). gemm_shift's codes are zero half the time, as after a ReLU, and skipped; its roofline counts
// the products actually computed. Compare rows of one run with each other, never with another day's run.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "roofline.hpp"

#ifdef FEWMUL_BENCH_OPENBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename(void);
#endif

namespace {

using namespace fewmul;

struct shape {
  const char* name;
  std::size_t m, n, k;
};

// MNIST MLP layers (batch x out x in) at batch 1, 200 and 1000; the CIFAR-10 convnet's im2col products
// (2048 positions x out channels x 9 in channels) of its 32x32, 16x16 and 8x8 stages at width 0.25, 0.5
// and 1; square sizes from 256 to 4096 (200 x 256 x 256: the smallest shape of the f32 target).
const shape gemm_shapes[] = {{"mnist_l1_b1", 1, 1024, 784},
                             {"mnist_l1_b200", 200, 1024, 784},
                             {"mnist_l2_b200", 200, 1024, 1024},
                             {"mnist_l4_b200", 200, 10, 1024},
                             {"mnist_l2_b1000", 1000, 1024, 1024},
                             {"cifar_c2_w0.25", 2048, 32, 288},
                             {"cifar_c4_w0.25", 2048, 64, 576},
                             {"cifar_c6_w0.25", 2048, 128, 1152},
                             {"cifar_c2_w0.5", 2048, 64, 576},
                             {"cifar_c4_w0.5", 2048, 128, 1152},
                             {"cifar_c6_w0.5", 2048, 256, 2304},
                             {"cifar_c2_w1", 2048, 128, 1152},
                             {"cifar_c4_w1", 2048, 256, 2304},
                             {"cifar_c6_w1", 2048, 512, 4608},
                             {"square_200x256", 200, 256, 256},
                             {"square_512", 512, 512, 512},
                             {"square_1024", 1024, 1024, 1024},
                             {"square_2048", 2048, 2048, 2048},
                             {"square_4096", 4096, 4096, 4096}};

// Which instruction mix each kernel's inner loop runs.
fewmul_bench::mix mix_of(const std::string& kind) {
  if (kind == "f32") return fewmul_bench::mix::f32_fma;
  if (kind == "binary") return fewmul_bench::mix::binary_lookup;
  if (kind == "ternary") return fewmul_bench::mix::ternary_lookup;
  if (kind == "shift") return fewmul_bench::mix::shift_add;
  return fewmul_bench::mix::xnor_popcount;
}

using bench_clock = std::chrono::steady_clock;
double seconds_since(bench_clock::time_point start) {
  return std::chrono::duration<double>(bench_clock::now() - start).count();
}

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

bool skip_unsupported(benchmark::State& state, isa which, const shape* s = nullptr) {
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

// Sets MAC/s, the roofline fraction (computed products: `computed` of the m n k) and, with OpenBLAS, the
// ratio to its sgemm on the same shape.
void report_macs(benchmark::State& state, const shape& s, double seconds, isa which, const std::string& kind,
                 double computed = 1.0) {
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
  std::vector<float> workspace(k.workspace_bytes(caches) / sizeof(float) + 16);
  void* ws = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(workspace.data()) + 63) / 64 * 64);
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
      k.gemm_f32({.m = s.m, .n = s.n, .k = s.k, .a = a.data(), .a_rs = s.k, .a_cs = 1, .b = b.data(), .ldb = s.n,
                  .c = c.data(), .ldc = s.n, .caches = caches, .workspace = ws});
    else if (kind == "binary")
      k.gemm_binary({.m = s.m, .n = s.n, .k = s.k, .a = a.data(), .a_rs = s.k, .a_cs = 1, .bits = w.data(), .ldb = ldb,
                     .c = c.data(), .ldc = s.n, .caches = caches, .workspace = ws});
    else if (kind == "ternary")
      k.gemm_ternary({.m = s.m, .n = s.n, .k = s.k, .a = a.data(), .a_rs = s.k, .a_cs = 1, .sign = sign.data(),
                      .nonzero = nz.data(), .ldb = ldb, .c = c.data(), .ldc = s.n, .caches = caches, .workspace = ws});
    else
      k.gemm_shift({.m = s.m, .n = s.n, .k = s.k, .q = codes.data(), .q_rs = s.k, .q_cs = 1, .b = b.data(),
                    .ldb = s.n, .c = c.data(), .c_rs = s.n, .c_cs = 1, .caches = caches, .workspace = ws});
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, kind, kind == "shift" ? nonzero : 1.0);
}

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
  std::vector<float> workspace(k.workspace_bytes(caches) / sizeof(float) + 16);
  void* ws = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(workspace.data()) + 63) / 64 * 64);
  const auto start = bench_clock::now();
  for (auto _ : state) {
    k.gemm_shift({.m = s.m, .n = s.n, .k = s.k, .q = codes.data(), .q_rs = 1, .q_cs = s.m, .b = delta.data(),
                  .ldb = s.n, .c = grad.data(), .c_rs = 1, .c_cs = s.m, .caches = caches, .workspace = ws});
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, "shift", 0.5);
}

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

// XNOR-popcount GEMM on ±1 bits: MAC/s counts one ±1 multiply-accumulate per bit pair.
void xnor_bench(benchmark::State& state, isa which, shape s) {
  if (skip_unsupported(state, which, &s)) return;
  const auto& k = kernels::kernels_for(which);
  const std::size_t words = kernels::words_for(s.k);
  const auto a = bits(s.m, s.k, 7), bt = bits(s.n, s.k, 8);  // bt[w][n]: any bits serve for timing
  std::vector<std::int32_t> c(s.m * s.n);
  const auto start = bench_clock::now();
  for (auto _ : state) {
    k.gemm_xnor({.m = s.m, .n = s.n, .k_words = words, .k_bits = static_cast<std::int32_t>(s.k), .a = a.data(),
                 .lda = words, .bt = bt.data(), .ldbt = s.n, .c = c.data(), .ldc = s.n});
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, "xnor");
}

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
    const std::string isa_text(isa_name(which));
    for (const shape& s : gemm_shapes)
      for (const char* kind : {"f32", "binary", "ternary", "shift"})
        benchmark::RegisterBenchmark(("gemm_" + std::string(kind) + "/" + isa_text + "/" + s.name).c_str(), gemm_bench,
                                     which, s, std::string(kind))
            ->Unit(benchmark::kMicrosecond);
    for (const shape& s : gemm_shapes)
      benchmark::RegisterBenchmark(("gemm_xnor/" + isa_text + "/" + s.name).c_str(), xnor_bench, which, s)
          ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("gemm_shift_weight_gradient/" + isa_text + "/mnist_l2_b200").c_str(),
                                 shift_weight_gradient_bench, which)
        ->Unit(benchmark::kMicrosecond);
    for (bool ternary : {false, true})
      for (auto mode : {kernels::sample_mode::deterministic, kernels::sample_mode::stochastic})
        benchmark::RegisterBenchmark(
            (std::string(ternary ? "pack_ternary" : "pack_binary") +
             (mode == kernels::sample_mode::stochastic ? "_stochastic/" : "_deterministic/") + isa_text + "/1024x1024")
                .c_str(),
            pack_bench, which, ternary, mode)
            ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("quantize_pow2/" + isa_text + "/200x1024").c_str(), quantize_bench, which)
        ->Unit(benchmark::kMicrosecond);
  }
  return 0;
}();

}  // namespace
