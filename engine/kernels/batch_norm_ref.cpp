// batch_norm: scalar reference (contract in fewmul/kernels.hpp).
#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {
namespace {

float relu(float y) { return y > 0.0f ? y : 0.0f; }
// The gradient a fused ReLU passes back: dy where the forward value was positive.
float through_relu(const batch_norm_params& p, std::size_t at, std::size_t f) {
  if (!p.relu) return p.dy[at];
  const float y = p.gamma[f] * ((p.x[at] - p.mean[f]) * p.inv_std[f]) + p.beta[f];
  return y > 0.0f ? p.dy[at] : 0.0f;
}

}  // namespace

void batch_norm_forward_ref(const batch_norm_params& p) noexcept {
  for (std::size_t r = 0; r < p.rows; ++r)
    for (std::size_t f = 0; f < p.features; ++f) {
      const std::size_t at = r * p.ld + f;
      const float y = p.gamma[f] * ((p.x[at] - p.mean[f]) * p.inv_std[f]) + p.beta[f];
      p.out[at] = p.relu ? relu(y) : y;
    }
}

void batch_norm_inference_ref(const batch_norm_params& p) noexcept {
  for (std::size_t r = 0; r < p.rows; ++r)
    for (std::size_t f = 0; f < p.features; ++f) {
      const std::size_t at = r * p.ld + f;
      const float y = p.gamma[f] * (p.x[at] - p.mean[f]) * p.inv_std[f] + p.beta[f];
      p.out[at] = p.relu ? relu(y) : y;
    }
}

void batch_norm_sums_ref(const batch_norm_params& p) noexcept {
  for (std::size_t f = 0; f < p.features; ++f) {
    float sum = 0.0f, dy_sum = 0.0f;
    for (std::size_t r = 0; r < p.rows; ++r) {
      const float x = p.x[r * p.ld + f];
      switch (p.sum) {
        case batch_norm_sum::values:
          sum += x;
          break;
        case batch_norm_sum::squares: {
          const float d = x - p.mean[f];
          sum += d * d;
          break;
        }
        case batch_norm_sum::shift_squares: {
          const float d = x - p.mean[f];
          sum += d * ap2(d);
          break;
        }
        case batch_norm_sum::gradients: {
          const float dy = through_relu(p, r * p.ld + f, f);
          sum += dy * ((x - p.mean[f]) * p.inv_std[f]);
          dy_sum += dy;
          break;
        }
      }
    }
    p.sums[f] = sum;
    if (p.sum == batch_norm_sum::gradients) p.sums[p.second + f] = dy_sum;
  }
}

void batch_norm_backward_ref(const batch_norm_params& p) noexcept {
  for (std::size_t r = 0; r < p.rows; ++r)
    for (std::size_t f = 0; f < p.features; ++f) {
      const std::size_t at = r * p.ld + f;
      const float scale = p.gamma[f] * p.inv_std[f] / p.count;
      const float xhat = (p.x[at] - p.mean[f]) * p.inv_std[f];
      p.out[at] = scale * (p.count * through_relu(p, at, f) - p.beta_grad[f] - xhat * p.gamma_grad[f]);
    }
}

}  // namespace fewmul::kernels::detail
