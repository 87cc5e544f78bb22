#pragma once
// Shared by the kernel benchmarks (bench_<stem>.cpp; bench_kernels.cpp registers them all in one order):
// shapes, random operands, the ISA check and the MAC/s, roofline and vs_openblas counters.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"

namespace fewmul_bench {

struct shape {
  const char* name;
  std::size_t m, n, k;
};

// MNIST MLP layers (batch x out x in) at batch 1, 200 and 1000; the CIFAR-10 convnet's im2col products
// (2048 positions x out channels x 9 in channels) of its 32x32, 16x16 and 8x8 stages at width 0.25, 0.5
// and 1; square sizes from 256 to 4096 (200 x 256 x 256: the smallest shape of the f32 target).
inline const shape gemm_shapes[] = {
    {"mnist_l1_b1", 1, 1024, 784},      {"mnist_l1_b200", 200, 1024, 784},    {"mnist_l2_b200", 200, 1024, 1024},
    {"mnist_l4_b200", 200, 10, 1024},   {"mnist_l2_b1000", 1000, 1024, 1024}, {"cifar_c2_w0.25", 2048, 32, 288},
    {"cifar_c4_w0.25", 2048, 64, 576},  {"cifar_c6_w0.25", 2048, 128, 1152},  {"cifar_c2_w0.5", 2048, 64, 576},
    {"cifar_c4_w0.5", 2048, 128, 1152}, {"cifar_c6_w0.5", 2048, 256, 2304},   {"cifar_c2_w1", 2048, 128, 1152},
    {"cifar_c4_w1", 2048, 256, 2304},   {"cifar_c6_w1", 2048, 512, 4608},     {"square_200x256", 200, 256, 256},
    {"square_512", 512, 512, 512},      {"square_1024", 1024, 1024, 1024},    {"square_2048", 2048, 2048, 2048},
    {"square_4096", 4096, 4096, 4096}};

using bench_clock = std::chrono::steady_clock;
inline double seconds_since(bench_clock::time_point start) {
  return std::chrono::duration<double>(bench_clock::now() - start).count();
}

std::vector<float> floats(std::size_t n, unsigned seed);
std::vector<std::uint64_t> bits(std::size_t rows, std::size_t cols, unsigned seed);
bool skip_unsupported(benchmark::State& state, fewmul::isa which, const shape* s = nullptr);
// Sets MAC/s, the roofline fraction (computed products: `computed` of the m n k) and, with OpenBLAS, the
// ratio to its sgemm on the same shape.
void report_macs(benchmark::State& state, const shape& s, double seconds, fewmul::isa which, const std::string& kind,
                 double computed = 1.0);

// A 64-byte aligned workspace of the size `k` asks for with this CPU's cache sizes.
struct bench_workspace {
  bench_workspace(const fewmul::kernels::kernel_table& k, const fewmul::kernels::cache_sizes& caches)
      : storage(k.workspace_bytes(caches) / sizeof(float) + 16) {}
  void* get() { return reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(storage.data()) + 63) / 64 * 64); }
  std::vector<float> storage;
};

// Each bench_<stem>.cpp registers its rows for one ISA.
void register_gemm(fewmul::isa which);  // gemm_f32, gemm_binary, gemm_ternary, gemm_shift (bench_gemm.cpp)
void register_gemm_xnor(fewmul::isa which);
void register_weight_gradient(fewmul::isa which);  // gemm_f32, gemm_shift as the weight gradient calls them
void register_pack(fewmul::isa which);
void register_quantize_pow2(fewmul::isa which);
void register_conv_binary(fewmul::isa which);
void register_update_weights(fewmul::isa which);
void register_max_pool(fewmul::isa which);
void register_batch_norm(fewmul::isa which);

}  // namespace fewmul_bench
