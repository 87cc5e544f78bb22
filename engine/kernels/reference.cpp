// The reference kernel table (the scalar references live in <stem>_ref.cpp, one per kernel stem) and the
// scalar helpers of fewmul/kernels.hpp.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "fewmul/kernels.hpp"
#include "kernels/reference.hpp"

namespace fewmul::kernels {
namespace {

std::size_t no_workspace_bytes(const cache_sizes&) noexcept { return 0; }

}  // namespace

const kernel_table& reference_kernels() {
  using namespace detail;
  static const kernel_table table{fewmul::isa::scalar,   pack_binary_ref,         pack_ternary_ref,
                                  gemm_f32_ref,          gemm_binary_ref,         gemm_ternary_ref,
                                  gemm_shift_ref,        quantize_pow2_ref,       gemm_xnor_ref,
                                  conv_binary_ref,       update_weights_ref,      max_pool_forward_ref,
                                  max_pool_backward_ref, batch_norm_forward_ref,  batch_norm_inference_ref,
                                  batch_norm_sums_ref,   batch_norm_backward_ref, 1,
                                  no_workspace_bytes};
  return table;
}

void pack_levels(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, int bits, std::uint64_t* planes,
                 std::size_t plane_stride, std::size_t ldb) noexcept {
  const std::size_t words = words_for(cols);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t w = 0; w < words; ++w) {
      std::uint64_t word[8] = {};
      const std::size_t c1 = std::min(cols, w * 64 + 64);
      for (std::size_t c = w * 64; c < c1; ++c) {
        const std::uint32_t u = level_of(x[r * ldx + c], bits);
        for (int i = 0; i < bits; ++i) word[i] |= static_cast<std::uint64_t>((u >> i) & 1u) << (c % 64);
      }
      for (int i = 0; i < bits; ++i) planes[static_cast<std::size_t>(i) * plane_stride + r * ldb + w] = word[i];
    }
}

float pow2_code_value(std::int8_t code) noexcept {
  if (code == 0) return 0.0f;
  const int c = code;
  const float magnitude = std::ldexp(1.0f, (c < 0 ? -c : c) - pow2_code_bias);
  return c < 0 ? -magnitude : magnitude;
}

// AP2 on the float's bits: keep sign and exponent, round the exponent up when the significand
// 1.m >= sqrt(2) (log2 of it >= 1/2); sqrt(2) = 1.0110101000001001111001100...b, whose first 23
// fraction bits are 0x3504f3 (and the rest non-zero), so 1.m >= sqrt(2) iff m >= 0x3504f4.
float ap2(float v) noexcept {
  if (v == 0.0f || !std::isfinite(v)) return v;
  std::uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  const std::uint32_t sign = b & 0x80000000u, magnitude = b & 0x7fffffffu;
  if (magnitude < 0x00800000u) {  // subnormal: via frexp, |v| = f 2^e with f in [0.5, 1)
    int e = 0;
    const float f = std::frexp(std::fabs(v), &e);
    const float r = std::ldexp(1.0f, f >= 0.70710678f ? e : e - 1);
    return sign ? -r : r;
  }
  std::uint32_t exponent = magnitude & 0x7f800000u;
  if ((magnitude & 0x007fffffu) >= 0x3504f4u) exponent += 0x00800000u;
  const std::uint32_t out = sign | exponent;
  float r;
  std::memcpy(&r, &out, sizeof r);
  return r;
}

}  // namespace fewmul::kernels
