#pragma once
// batch_norm: batch normalization's element-wise passes and column sums (contract in fewmul/kernels.hpp),
// vectors along the features. The sums hold `group` vectors of features' sums (and constants) in registers
// and run down the rows, so each feature's sum adds its rows in the reference's order; the expressions are the
// reference's, term by term, with separate multiply and add (no fused multiply-add: the library is built with
// -ffp-contract=off) and a correctly rounded division, so every lane gives the reference's bits. Features past the last
// full vector take the same steps on scalars.
#include <cfloat>

#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct batch_norm_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lanes;
  using typename base::fb;
  using typename base::ib;
  using typename base::ub;
  static constexpr std::size_t group = 4;  // vectors of features per pass over the rows

  // Calls vectors.operator()<G>(f) on groups of G vectors of features (G = group while they fit, then 1)
  // and scalar(f) on each feature past the last full vector.
  template <class Vectors, class Scalar>
  static void for_feature_groups(std::size_t features, Vectors&& vectors, Scalar&& scalar) {
    std::size_t f = 0;
    for (; f + group * lanes <= features; f += group * lanes) vectors.template operator()<group>(f);
    for (; f + lanes <= features; f += lanes) vectors.template operator()<1>(f);
    for (; f < features; ++f) scalar(f);
  }
  template <std::size_t G>
  static void load_features(fb (&v)[G], const float* from) {
    for (std::size_t i = 0; i < G; ++i) v[i] = fb::load_unaligned(from + i * lanes);
  }

  // AP2 on the bits for normal numbers and zeros (fewmul::kernels::ap2's rule: keep sign and exponent,
  // round the exponent up when the fraction is >= 0x3504f4); a vector with a subnormal, infinite or NaN
  // lane goes lane by lane through the scalar function.
  static fb ap2(fb d) {
    const fb magnitude = xsimd::abs(d);
    const auto special = ((magnitude < fb(FLT_MIN)) & (magnitude != fb(0.0f))) | !(magnitude <= fb(FLT_MAX));
    if (xsimd::any(special)) {
      alignas(64) float values[lanes];
      d.store_aligned(values);
      for (float& v : values) v = kernels::ap2(v);
      return fb::load_aligned(values);
    }
    const ub bits = simd_compat::as_bits<A>(d);
    const ib fraction = xsimd::bitwise_cast<ib>(bits & ub(0x007fffffu));
    const ub up = xsimd::bitwise_cast<ub>(xsimd::select(fraction >= ib(0x3504f4), ib(0x00800000), ib(0)));
    return simd_compat::as_float<A>((bits & ub(0x80000000u)) | ((bits & ub(0x7f800000u)) + up));
  }

  // The element-wise passes run along each row (contiguous memory, whatever the row stride), the per-feature
  // constants coming from L1; backward's per-feature scale is computed once per slab of features.
  // A fused ReLU (p.relu): y > 0 ? y : +0, as the reference (a NaN gives +0).
  static fb relu(fb y) { return xsimd::select(y > fb(0.0f), y, fb(0.0f)); }
  static float relu(float y) { return y > 0.0f ? y : 0.0f; }
  // The gradient the fused ReLU passes back: dy where the forward value y was positive, else +0.
  static fb through_relu(fb dy, fb y) { return xsimd::select(y > fb(0.0f), dy, fb(0.0f)); }
  static float through_relu(float dy, float y) { return y > 0.0f ? dy : 0.0f; }
  template <bool Inference, bool Relu>
  static void normalize(const batch_norm_params& p) {
    auto value = [](auto x, auto mean, auto inv_std, auto gamma, auto beta) {
      auto y = Inference ? gamma * (x - mean) * inv_std + beta : gamma * ((x - mean) * inv_std) + beta;
      if constexpr (Relu) y = relu(y);
      return y;
    };
    for (std::size_t r = 0; r < p.rows; ++r) {
      const float* x = p.x + r * p.ld;
      float* out = p.out + r * p.ld;
      std::size_t f = 0;
      for (; f + lanes <= p.features; f += lanes)
        value(fb::load_unaligned(x + f), fb::load_unaligned(p.mean + f), fb::load_unaligned(p.inv_std + f),
              fb::load_unaligned(p.gamma + f), fb::load_unaligned(p.beta + f))
            .store_unaligned(out + f);
      for (; f < p.features; ++f) out[f] = value(x[f], p.mean[f], p.inv_std[f], p.gamma[f], p.beta[f]);
    }
  }
  static void batch_norm_forward(const batch_norm_params& p) noexcept {
    p.relu ? normalize<false, true>(p) : normalize<false, false>(p);
  }
  static void batch_norm_inference(const batch_norm_params& p) noexcept {
    p.relu ? normalize<true, true>(p) : normalize<true, false>(p);
  }

  template <batch_norm_sum S, bool Relu = false>
  static void sums(const batch_norm_params& p) {
    for_feature_groups(
        p.features,
        [&]<std::size_t G>(std::size_t f) {
          fb mean[G], inv_std[G], sum[G], dy_sum[G], gamma[G], beta[G];
          for (std::size_t v = 0; v < G; ++v) sum[v] = dy_sum[v] = fb(0.0f);
          if constexpr (S != batch_norm_sum::values) load_features(mean, p.mean + f);
          if constexpr (S == batch_norm_sum::gradients) load_features(inv_std, p.inv_std + f);
          if constexpr (Relu) {
            load_features(gamma, p.gamma + f);
            load_features(beta, p.beta + f);
          }
          for (std::size_t r = 0; r < p.rows; ++r) {
            const float* x = p.x + r * p.ld + f;
            for (std::size_t v = 0; v < G; ++v) {
              const fb xv = fb::load_unaligned(x + v * lanes);
              if constexpr (S == batch_norm_sum::values) {
                sum[v] += xv;
              } else if constexpr (S == batch_norm_sum::squares) {
                const fb d = xv - mean[v];
                sum[v] += d * d;
              } else if constexpr (S == batch_norm_sum::shift_squares) {
                const fb d = xv - mean[v];
                sum[v] += d * ap2(d);
              } else {
                const fb xhat = (xv - mean[v]) * inv_std[v];
                fb dy = simd_compat::unfolded<A>(fb::load_unaligned(p.dy + r * p.ld + f + v * lanes));
                if constexpr (Relu) dy = through_relu(dy, gamma[v] * xhat + beta[v]);
                sum[v] += dy * xhat;
                dy_sum[v] += dy;
              }
            }
          }
          for (std::size_t v = 0; v < G; ++v) {
            sum[v].store_unaligned(p.sums + f + v * lanes);
            if constexpr (S == batch_norm_sum::gradients) dy_sum[v].store_unaligned(p.sums + p.second + f + v * lanes);
          }
        },
        [&](std::size_t f) {
          float sum = 0.0f, dy_sum = 0.0f;
          for (std::size_t r = 0; r < p.rows; ++r) {
            const float x = p.x[r * p.ld + f];
            if constexpr (S == batch_norm_sum::values) {
              sum += x;
            } else if constexpr (S == batch_norm_sum::squares) {
              const float d = x - p.mean[f];
              sum += d * d;
            } else if constexpr (S == batch_norm_sum::shift_squares) {
              const float d = x - p.mean[f];
              sum += d * kernels::ap2(d);
            } else {
              const float xhat = (x - p.mean[f]) * p.inv_std[f];
              float dy = p.dy[r * p.ld + f];
              if constexpr (Relu) dy = through_relu(dy, p.gamma[f] * xhat + p.beta[f]);
              sum += dy * xhat;
              dy_sum += dy;
            }
          }
          p.sums[f] = sum;
          if constexpr (S == batch_norm_sum::gradients) p.sums[p.second + f] = dy_sum;
        });
  }
  static void batch_norm_sums(const batch_norm_params& p) noexcept {
    switch (p.sum) {
      case batch_norm_sum::values:
        return sums<batch_norm_sum::values>(p);
      case batch_norm_sum::squares:
        return sums<batch_norm_sum::squares>(p);
      case batch_norm_sum::shift_squares:
        return sums<batch_norm_sum::shift_squares>(p);
      case batch_norm_sum::gradients:
        return p.relu ? sums<batch_norm_sum::gradients, true>(p) : sums<batch_norm_sum::gradients, false>(p);
    }
  }

  static void batch_norm_backward(const batch_norm_params& p) noexcept {
    p.relu ? backward<true>(p) : backward<false>(p);
  }
  template <bool Relu>
  static void backward(const batch_norm_params& p) {
    constexpr std::size_t slab = 256;  // features whose scales sit on the stack
    alignas(64) float scales[slab];
    const fb count(p.count);
    for (std::size_t f0 = 0; f0 < p.features; f0 += slab) {
      const std::size_t width = std::min(slab, p.features - f0);
      std::size_t f = 0;
      for (; f + lanes <= width; f += lanes)
        simd_compat::div_exact<A>(fb::load_unaligned(p.gamma + f0 + f) * fb::load_unaligned(p.inv_std + f0 + f), count)
            .store_aligned(scales + f);
      for (; f < width; ++f) scales[f] = p.gamma[f0 + f] * p.inv_std[f0 + f] / p.count;
      const float *mean = p.mean + f0, *inv_std = p.inv_std + f0, *beta_grad = p.beta_grad + f0,
                  *gamma_grad = p.gamma_grad + f0, *gamma = p.gamma + f0, *beta = Relu ? p.beta + f0 : nullptr;
      for (std::size_t r = 0; r < p.rows; ++r) {
        const float* x = p.x + r * p.ld + f0;
        const float* dy = p.dy + r * p.ld + f0;
        float* out = p.out + r * p.ld + f0;
        for (f = 0; f + lanes <= width; f += lanes) {
          const fb xhat = (fb::load_unaligned(x + f) - fb::load_unaligned(mean + f)) * fb::load_unaligned(inv_std + f);
          fb g = simd_compat::unfolded<A>(fb::load_unaligned(dy + f));
          if constexpr (Relu) g = through_relu(g, fb::load_unaligned(gamma + f) * xhat + fb::load_unaligned(beta + f));
          (fb::load_aligned(scales + f) *
           ((count * g - fb::load_unaligned(beta_grad + f)) - xhat * fb::load_unaligned(gamma_grad + f)))
              .store_unaligned(out + f);
        }
        for (; f < width; ++f) {
          const float xhat = (x[f] - mean[f]) * inv_std[f];
          float g = dy[f];
          if constexpr (Relu) g = through_relu(g, gamma[f] * xhat + beta[f]);
          out[f] = scales[f] * (p.count * g - beta_grad[f] - xhat * gamma_grad[f]);
        }
      }
    }
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
