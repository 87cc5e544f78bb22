// update_weights: scalar reference (contract in fewmul/kernels.hpp).
#include <cmath>

#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {

void update_weights_ref(const update_weights_params& p) noexcept {
  auto clip = [&](float x) {
    x = x < p.lo ? p.lo : x;
    return p.hi < x ? p.hi : x;
  };
  const float keep1 = 1.0f - p.beta1, keep2 = 1.0f - p.beta2;
  for (std::size_t i = 0; i < p.n; ++i) {
    float g = p.g[i];
    for (std::size_t q = 1; q < p.g_parts; ++q) g += p.g[q * p.g_stride + i];
    switch (p.rule) {
      case update_rule::sgd:
        p.w[i] = clip(p.w[i] - p.rate * g);
        break;
      case update_rule::momentum:
        p.m1[i] = p.momentum * p.m1[i] + g;
        p.w[i] = clip(p.w[i] - p.rate * p.m1[i]);
        break;
      case update_rule::adam:
        p.m1[i] = p.beta1 * p.m1[i] + keep1 * g;
        p.m2[i] = p.beta2 * p.m2[i] + keep2 * g * g;
        p.w[i] = clip(p.w[i] - p.rate * (p.m1[i] / p.correction1) / (std::sqrt(p.m2[i] / p.correction2) + p.eps));
        break;
      case update_rule::adamax: {
        p.m1[i] = p.beta1 * p.m1[i] + keep1 * g;
        const float decayed = p.beta2 * p.m2[i], magnitude = std::fabs(g);
        p.m2[i] = decayed < magnitude ? magnitude : decayed;
        p.w[i] = clip(p.w[i] - p.rate * (p.m1[i] / (p.m2[i] + p.eps)));
        break;
      }
    }
  }
}

}  // namespace fewmul::kernels::detail
