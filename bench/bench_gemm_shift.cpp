// The weight-gradient GEMMs as the layers call them, on the same shapes and sparsity: gemm_shift for QBP
// (gemm_shift_weight_gradient/<isa>/<shape>/list_codes|list_dy) and gemm_f32 for float inputs
// (gemm_f32_weight_gradient/<isa>/<shape>/dense|skip_zero_dy).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

// gemm_shift as the layers call it for the QBP weight gradient: ΔWᵀ[in][out] = Σ_r code(x[r][in]) δ[r][out],
// the codes read through a transposed view of the batch's [rows][in] codes (half zero, as after a ReLU)
// and ΔW written through strides into [out][in]. A convolution's `in` is its im2col width (9 x channels),
// its rows are batch x positions, and its δ before a max-pool is 3/4 zeros (one window element in four).
struct gradient_shape {
  const char* name;
  std::size_t in, out, rows;
  double dy_zero_fraction;
};
constexpr gradient_shape gradient_shapes[] = {
    {"mnist_l2_b200", 1024, 1024, 200, 0.5},
    {"mnist_l4_b200", 1024, 10, 200, 0.0},
    {"cifar_w0.5_conv2_16img", 9 * 64, 64, 16 * 32 * 32, 0.75},    // width 0.5, second layer (before a pool)
    {"cifar_w0.5_conv4_64img", 9 * 128, 128, 64 * 16 * 16, 0.75},  // fourth layer (before a pool)
    {"cifar_w0.5_conv5_64img", 9 * 128, 256, 64 * 8 * 8, 0.5},     // fifth layer (no pool after it)
};

void shift_weight_gradient_bench(benchmark::State& state, isa which, gradient_shape g, bool list_b) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const shape s{g.name, g.in, g.out, g.rows};
  auto x = floats(s.k * s.m, 11);
  std::mt19937 coin(5);
  for (auto& v : x)
    if (coin() & 1u) v = 0.0f;
  std::vector<std::int8_t> codes(x.size());
  k.quantize_pow2(x.data(), x.size(), codes.data(), -4, 3, 1, 0);
  auto delta = floats(s.k * s.n, 12);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (auto& v : delta)
    if (uniform(coin) < g.dy_zero_fraction) v = 0.0f;
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
                  .list_b = list_b,
                  .caches = caches,
                  .workspace = ws});
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, "shift", 0.5);
}

// gemm_f32 as fp32/bc layers call it for the weight gradient: ΔW[out][in] = Σ_r δ[r][out] x[r][in], A = δ through
// a transposed view, dense or with its zeros skipped (skip_zero_a).
void f32_weight_gradient_bench(benchmark::State& state, isa which, gradient_shape g, bool skip_zeros) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const shape s{g.name, g.out, g.in, g.rows};
  auto x = floats(s.k * s.n, 11);
  std::mt19937 coin(5);
  for (auto& v : x)
    if (coin() & 1u) v = 0.0f;
  auto delta = floats(s.k * s.m, 12);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (auto& v : delta)
    if (uniform(coin) < g.dy_zero_fraction) v = 0.0f;
  std::vector<float> grad(s.m * s.n);
  const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  bench_workspace workspace(k, caches);
  void* ws = workspace.get();
  const auto start = bench_clock::now();
  for (auto _ : state) {
    k.gemm_f32({.m = s.m,
                .n = s.n,
                .k = s.k,
                .a = delta.data(),
                .a_rs = 1,
                .a_cs = s.m,
                .b = x.data(),
                .ldb = s.n,
                .skip_zero_a = skip_zeros,
                .c = grad.data(),
                .ldc = s.n,
                .caches = caches,
                .workspace = ws});
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, "f32", 1.0);
}

}  // namespace

void register_gemm_shift_weight_gradient(isa which) {
  const std::string isa_text(isa_name(which));
  for (const gradient_shape& g : gradient_shapes)
    for (const bool skip : {false, true})
      benchmark::RegisterBenchmark(
          ("gemm_f32_weight_gradient/" + isa_text + "/" + g.name + (skip ? "/skip_zero_dy" : "/dense")).c_str(),
          f32_weight_gradient_bench, which, g, skip)
          ->Unit(benchmark::kMicrosecond);
  for (const gradient_shape& g : gradient_shapes)
    for (const bool list_b : {false, true})
      benchmark::RegisterBenchmark(
          ("gemm_shift_weight_gradient/" + isa_text + "/" + g.name + (list_b ? "/list_dy" : "/list_codes")).c_str(),
          shift_weight_gradient_bench, which, g, list_b)
          ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
