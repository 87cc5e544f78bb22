// The weight-gradient GEMMs as the layers call them, on the same shapes and sparsity: gemm_shift for QBP
// (gemm_shift_weight_gradient/<isa>/<shape>/list_codes|list_dy) and gemm_f32 for float inputs
// (gemm_f32_weight_gradient/<isa>/<shape>/dense|skip_zero_dy); on the convolutions' shapes also .../implicit_*:
// the inputs (codes) read from maps through an indirection buffer (b_rows, q_rows), as the layers read them.
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
  double x_zero_fraction = 0.5;  // ReLU outputs; MNIST's pixels are 0.8
  std::size_t map_side = 0;      // convolutions: square maps of in / 9 channels, 3x3 kernel, same padding
};
constexpr gradient_shape gradient_shapes[] = {
    {"mnist_l1_b200", 784, 1024, 200, 0.0, 0.8},
    {"mnist_l2_b200", 1024, 1024, 200, 0.5},
    {"mnist_l2_b100", 1024, 1024, 100, 0.5},  // one of two minibatch parts (--batch-parts 2)
    {"mnist_l4_b200", 1024, 10, 200, 0.0},
    {"cifar_w0.5_conv2_16img", 9 * 64, 64, 16 * 32 * 32, 0.75, 0.5, 32},    // width 0.5, second layer (before a pool)
    {"cifar_w0.5_conv4_64img", 9 * 128, 128, 64 * 16 * 16, 0.75, 0.5, 16},  // fourth layer (before a pool)
    {"cifar_w0.5_conv3_64img", 9 * 64, 128, 64 * 16 * 16, 0.0, 0.5, 16},    // third layer (no pool after it: dy dense)
    {"cifar_w0.5_conv5_64img", 9 * 128, 256, 64 * 8 * 8, 0.0, 0.5, 8},      // fifth layer (no pool after it: dy dense)
};

// A layer's inputs x [rows][in] (half zero, as after a ReLU) and output gradient δ [rows][out] with the shape's
// fraction of zeros.
struct gradient_operands {
  std::vector<float> x, delta;
};
gradient_operands operands_of(const gradient_shape& g) {
  gradient_operands o{floats(g.rows * g.in, 11), floats(g.rows * g.out, 12)};
  std::mt19937 coin(5);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (auto& v : o.x)
    if (uniform(coin) < g.x_zero_fraction) v = 0.0f;
  for (auto& v : o.delta)
    if (uniform(coin) < g.dy_zero_fraction) v = 0.0f;
  return o;
}

// Times run(workspace) writing into grad and reports it as a product of shape s.
template <class Run>
void time_weight_gradient(benchmark::State& state, const kernels::kernel_table& k, const shape& s, isa which,
                          const std::string& kind, double computed, std::vector<float>& grad, Run&& run) {
  bench_workspace workspace(k, kernels::detect_cache_sizes());
  const auto start = bench_clock::now();
  for (auto _ : state) {
    run(workspace.get());
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  report_macs(state, s, seconds_since(start), which, kind, computed);
}

// The implicit im2col of a convolution shape's rows: 9 pointers per output position into `maps` (the first
// rows / side^2 examples of the operand as [side][side][channels] maps, 3x3 kernel, same padding), `zeros` in
// the padding.
template <class T>
std::vector<const T*> im2col_taps(const gradient_shape& g, const T* maps, const T* zeros) {
  const std::size_t side = g.map_side, channels = g.in / 9, positions = side * side;
  std::vector<const T*> taps(g.rows * 9);
  for (std::size_t r = 0; r < g.rows; ++r)
    for (std::size_t t = 0; t < 9; ++t) {
      const std::size_t image = r / positions, y = r % positions / side + t / 3, x = r % side + t % 3;
      const bool inside = y >= 1 && x >= 1 && y <= side && x <= side;
      taps[r * 9 + t] = inside ? maps + ((image * side + y - 1) * side + x - 1) * channels : zeros;
    }
  return taps;
}

// implicit: the codes read as a convolution reads its quantized maps (im2col_taps, gemm_shift's q_rows).
void shift_weight_gradient_bench(benchmark::State& state, isa which, gradient_shape g, bool list_b, bool implicit) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const shape s{g.name, g.in, g.out, g.rows};
  const gradient_operands o = operands_of(g);
  std::vector<std::int8_t> codes(o.x.size());
  k.quantize_pow2(o.x.data(), o.x.size(), codes.data(), -4, 3, 1, 0);
  std::vector<float> grad(s.m * s.n);
  const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  kernels::gemm_shift_params p{.m = s.m,
                               .n = s.n,
                               .k = s.k,
                               .q = codes.data(),
                               .q_rs = 1,
                               .q_cs = s.m,
                               .b = o.delta.data(),
                               .ldb = s.n,
                               .c = grad.data(),
                               .c_rs = 1,
                               .c_cs = s.m,
                               .list_b = list_b,
                               .caches = caches};
  const std::vector<std::int8_t> zeros(g.in / 9, 0);
  const auto taps = implicit ? im2col_taps(g, codes.data(), zeros.data()) : std::vector<const std::int8_t*>{};
  if (implicit) {
    p.q = nullptr;
    p.q_rows = taps.data();
    p.q_segment = g.in / 9;
    p.q_cs = 9;
  }
  time_weight_gradient(state, k, s, which, "shift", 0.5, grad, [&](void* ws) {
    p.workspace = ws;
    k.gemm_shift(p);
  });
}

// gemm_f32 as fp32/bc layers call it for the weight gradient: ΔW[out][in] = Σ_r δ[r][out] x[r][in], A = δ through
// a transposed view, dense or with its zeros skipped (skip_zero_a).
// implicit: x is the im2col of maps (the first rows / side^2 examples of o.x as [side][side][channels] maps),
// read through an indirection buffer of 9 pointers per position, as convolutions call it.
void f32_weight_gradient_bench(benchmark::State& state, isa which, gradient_shape g, bool skip_zeros, bool implicit) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const shape s{g.name, g.out, g.in, g.rows};
  const gradient_operands o = operands_of(g);
  std::vector<float> grad(s.m * s.n);
  const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  kernels::gemm_f32_params p{.m = s.m,
                             .n = s.n,
                             .k = s.k,
                             .a = o.delta.data(),
                             .a_rs = 1,
                             .a_cs = s.m,
                             .b = o.x.data(),
                             .ldb = s.n,
                             .skip_zero_a = skip_zeros,
                             .c = grad.data(),
                             .ldc = s.n,
                             .caches = caches};
  const std::vector<float> zeros(g.in / 9, 0.0f);
  const auto taps = implicit ? im2col_taps(g, o.x.data(), zeros.data()) : std::vector<const float*>{};
  if (implicit) {
    p.b = nullptr;
    p.b_rows = taps.data();
    p.b_segment = g.in / 9;
    p.ldb = 9;
  }
  time_weight_gradient(state, k, s, which, "f32", 1.0, grad, [&](void* ws) {
    p.workspace = ws;
    k.gemm_f32(p);
  });
}

}  // namespace

void register_weight_gradient(isa which) {
  const std::string isa_text(isa_name(which));
  for (const gradient_shape& g : gradient_shapes)
    for (const bool implicit : {false, true})
      for (const bool skip : {false, true}) {
        if (implicit && g.map_side == 0) continue;
        benchmark::RegisterBenchmark(("gemm_f32_weight_gradient/" + isa_text + "/" + g.name + "/" +
                                      (implicit ? "implicit_" : "") + (skip ? "skip_zero_dy" : "dense"))
                                         .c_str(),
                                     f32_weight_gradient_bench, which, g, skip, implicit)
            ->Unit(benchmark::kMicrosecond);
      }
  for (const gradient_shape& g : gradient_shapes)
    for (const bool implicit : {false, true})
      for (const bool list_b : {false, true}) {
        if (implicit && g.map_side == 0) continue;
        benchmark::RegisterBenchmark(("gemm_shift_weight_gradient/" + isa_text + "/" + g.name + "/" +
                                      (implicit ? "implicit_" : "") + (list_b ? "list_dy" : "list_codes"))
                                         .c_str(),
                                     shift_weight_gradient_bench, which, g, list_b, implicit)
            ->Unit(benchmark::kMicrosecond);
      }
}

}  // namespace fewmul_bench
