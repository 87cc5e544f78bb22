#pragma once
// update_weights: one optimizer step over a weight vector (contract in fewmul/kernels.hpp). The vector body
// and the scalar tail evaluate the reference's expressions in its order; IEEE add, multiply, divide and
// square root are correctly rounded in every lane, and max/clip are written as selects with the
// reference's comparisons, so NaN and signed zeros come out the same (square roots and divisions through
// simd_compat's exact ones: xsimd 8.1's NEON ones are approximations).
#include <cmath>

#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct update_weights_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lanes;
  using typename base::fb;

  template <update_rule Rule>
  static void run(const update_weights_params& p) {
    const fb lo(p.lo), hi(p.hi), rate(p.rate), momentum(p.momentum), beta1(p.beta1), beta2(p.beta2), eps(p.eps);
    const fb keep1(1.0f - p.beta1), keep2(1.0f - p.beta2), c1(p.correction1), c2(p.correction2);
    auto clip = [&](fb x) {
      x = xsimd::select(x < lo, lo, x);
      return xsimd::select(hi < x, hi, x);
    };
    std::size_t i = 0;
    for (; i + lanes <= p.n; i += lanes) {
      fb g = fb::load_unaligned(p.g + i);
      for (std::size_t q = 1; q < p.g_parts; ++q) g += fb::load_unaligned(p.g + q * p.g_stride + i);
      const fb w = fb::load_unaligned(p.w + i);
      if constexpr (Rule == update_rule::sgd) {
        clip(w - rate * g).store_unaligned(p.w + i);
      } else if constexpr (Rule == update_rule::momentum) {
        const fb m1 = momentum * fb::load_unaligned(p.m1 + i) + g;
        m1.store_unaligned(p.m1 + i);
        clip(w - rate * m1).store_unaligned(p.w + i);
      } else {
        const fb m1 = beta1 * fb::load_unaligned(p.m1 + i) + keep1 * g;
        m1.store_unaligned(p.m1 + i);
        if constexpr (Rule == update_rule::adam) {
          const fb m2 = beta2 * fb::load_unaligned(p.m2 + i) + keep2 * g * g;
          m2.store_unaligned(p.m2 + i);
          const fb root = simd_compat::sqrt_exact<A>(simd_compat::div_exact<A>(m2, c2));
          clip(w - simd_compat::div_exact<A>(rate * simd_compat::div_exact<A>(m1, c1), root + eps))
              .store_unaligned(p.w + i);
        } else {
          const fb decayed = beta2 * fb::load_unaligned(p.m2 + i), magnitude = xsimd::abs(g);
          const fb m2 = xsimd::select(decayed < magnitude, magnitude, decayed);
          m2.store_unaligned(p.m2 + i);
          clip(w - rate * simd_compat::div_exact<A>(m1, m2 + eps)).store_unaligned(p.w + i);
        }
      }
    }
    // The tail: the same expressions on scalars.
    auto clip1 = [&](float x) {
      x = x < p.lo ? p.lo : x;
      return p.hi < x ? p.hi : x;
    };
    const float k1 = 1.0f - p.beta1, k2 = 1.0f - p.beta2;
    for (; i < p.n; ++i) {
      float g = p.g[i];
      for (std::size_t q = 1; q < p.g_parts; ++q) g += p.g[q * p.g_stride + i];
      if constexpr (Rule == update_rule::sgd) {
        p.w[i] = clip1(p.w[i] - p.rate * g);
      } else if constexpr (Rule == update_rule::momentum) {
        p.m1[i] = p.momentum * p.m1[i] + g;
        p.w[i] = clip1(p.w[i] - p.rate * p.m1[i]);
      } else {
        p.m1[i] = p.beta1 * p.m1[i] + k1 * g;
        if constexpr (Rule == update_rule::adam) {
          p.m2[i] = p.beta2 * p.m2[i] + k2 * g * g;
          p.w[i] = clip1(p.w[i] - p.rate * (p.m1[i] / p.correction1) / (std::sqrt(p.m2[i] / p.correction2) + p.eps));
        } else {
          const float decayed = p.beta2 * p.m2[i], magnitude = std::fabs(g);
          p.m2[i] = decayed < magnitude ? magnitude : decayed;
          p.w[i] = clip1(p.w[i] - p.rate * (p.m1[i] / (p.m2[i] + p.eps)));
        }
      }
    }
  }

  static void update_weights(const update_weights_params& p) noexcept {
    switch (p.rule) {
      case update_rule::sgd:
        return run<update_rule::sgd>(p);
      case update_rule::momentum:
        return run<update_rule::momentum>(p);
      case update_rule::adam:
        return run<update_rule::adam>(p);
      case update_rule::adamax:
        return run<update_rule::adamax>(p);
    }
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
