#pragma once
// quantize_pow2: stochastic power-of-two quantizer (contract in fewmul/kernels.hpp).
#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct quantize_pow2_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lanes;
  using base::uniform23;
  using typename base::fb;
  using typename base::fm;
  using typename base::ib;
  using typename base::ub;

  // ---- stochastic power-of-two quantizer ----------------------------------------------------------
  static void quantize_pow2(const float* x, std::size_t n, std::int8_t* codes, int kmin, int kmax, std::uint64_t key,
                            std::uint32_t index0) noexcept {
    const float below_scale = std::ldexp(1.0f, 23 - kmin);
    std::size_t i = 0;
    auto block = [&](fb v, std::uint32_t index, std::int8_t* out, std::size_t count) {
      const ub bits = simd_compat::as_bits<A>(v) & ub(0x7fffffffu);
      const ub u = uniform23(key, index);
      const ib exponent = xsimd::bitwise_cast<ib>(bits >> 23) - ib(127);
      const ib mantissa = xsimd::bitwise_cast<ib>(bits & ub(0x7fffffu));
      const ib ui = xsimd::bitwise_cast<ib>(u);
      ib k = exponent + xsimd::select(ui < mantissa, ib(1), ib(0));
      k = xsimd::select(exponent >= ib(kmax), ib(kmax), k);
      const auto below = exponent < ib(kmin);
      const fb threshold = xsimd::abs(v) * fb(below_scale);
      const fm keep_below = simd_compat::small_uint_to_float<A>(u) < threshold;
      const auto below_zero = xsimd::bitwise_cast<ib>(xsimd::select(keep_below, fb(0.0f), fb(1.0f))) != ib(0);
      k = xsimd::select(below, ib(kmin), k);
      const auto zero = (xsimd::bitwise_cast<ib>(bits) == ib(0)) | (below & below_zero);
      ib code = k + ib(pow2_code_bias);
      code = xsimd::select(xsimd::bitwise_cast<ib>(simd_compat::as_bits<A>(v)) < ib(0), -code, code);
      code = xsimd::select(zero, ib(0), code);
      alignas(64) std::int32_t lanes_out[lanes];
      code.store_aligned(lanes_out);
      for (std::size_t l = 0; l < count; ++l) out[l] = static_cast<std::int8_t>(lanes_out[l]);
    };
    for (; i + lanes <= n; i += lanes)
      block(fb::load_unaligned(x + i), index0 + static_cast<std::uint32_t>(i), codes + i, lanes);
    if (i < n) {
      alignas(64) float tail[lanes] = {};
      for (std::size_t t = i; t < n; ++t) tail[t - i] = x[t];
      block(fb::load_aligned(tail), index0 + static_cast<std::uint32_t>(i), codes + i, n - i);
    }
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
