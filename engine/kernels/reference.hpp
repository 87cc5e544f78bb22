#pragma once
// Scalar references of the kernels, one source per kernel stem (<stem>_ref.cpp): the specification the
// SIMD variants are tested against bit for bit. reference.cpp gathers them into reference_kernels().
#include <cstddef>
#include <cstdint>

#include "fewmul/kernels.hpp"

namespace fewmul::kernels::detail {

// Uniform integer in [0, 2^23) for element `index`.
inline std::uint32_t uniform23_ref(std::uint64_t key, std::uint32_t index) { return counter_hash(key, index) >> 9; }

inline bool bit_at(const std::uint64_t* bits, std::size_t ldb, std::size_t r, std::size_t c) {
  return (bits[r * ldb + c / 64] >> (c % 64)) & 1u;
}

void pack_binary_ref(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw, std::uint64_t* bits,
                     std::size_t ldb, sample_mode mode, std::uint64_t key) noexcept;
void pack_ternary_ref(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw, std::uint64_t* sign,
                      std::uint64_t* nonzero, std::size_t ldb, sample_mode mode, std::uint64_t key) noexcept;
void gemm_f32_ref(const gemm_f32_params& p) noexcept;
void gemm_binary_ref(const gemm_binary_params& p) noexcept;
void gemm_ternary_ref(const gemm_ternary_params& p) noexcept;
void gemm_shift_ref(const gemm_shift_params& p) noexcept;
void gemm_xnor_ref(const gemm_xnor_params& p) noexcept;
void conv_binary_ref(const conv_binary_params& p) noexcept;
void update_weights_ref(const update_weights_params& p) noexcept;
void max_pool_forward_ref(const max_pool_params& p) noexcept;
void max_pool_backward_ref(const max_pool_params& p) noexcept;
void batch_norm_forward_ref(const batch_norm_params& p) noexcept;
void batch_norm_inference_ref(const batch_norm_params& p) noexcept;
void batch_norm_sums_ref(const batch_norm_params& p) noexcept;
void batch_norm_backward_ref(const batch_norm_params& p) noexcept;
void quantize_pow2_ref(const float* x, std::size_t n, std::int8_t* codes, int kmin, int kmax, std::uint64_t key,
                       std::uint32_t index0) noexcept;

}  // namespace fewmul::kernels::detail
