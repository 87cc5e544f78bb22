#include "optimizer.hpp"

#include <cmath>

#include "fewmul/error.hpp"

#include "parallel_gemm.hpp"

namespace fewmul::detail {

optimizer::optimizer(optimizer_kind kind, float momentum, std::vector<parameter*> params)
    : kind_(kind), momentum_(momentum), params_(std::move(params)) {
  for (parameter* p : params_) {
    first_.emplace_back(p->value.size(), 0.0f);
    second_.emplace_back(kind_ == optimizer_kind::adam ? p->value.size() : 0, 0.0f);
  }
}

void optimizer::step(float lr, const runtime& rt) {
  ++steps_;
  constexpr float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  const float correction1 = 1.0f - std::pow(beta1, static_cast<float>(steps_));
  const float correction2 = 1.0f - std::pow(beta2, static_cast<float>(steps_));
  for (std::size_t pi = 0; pi < params_.size(); ++pi) {
    parameter& p = *params_[pi];
    const float rate = lr * p.lr_scale;
    std::vector<float>& m = first_[pi];
    std::vector<float>& v = second_[pi];
    parallel_rows(rt, p.value.size(), 16384, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) {
        float w = p.value[i];
        const float g = p.grad[i];
        if (kind_ == optimizer_kind::sgd) {
          if (momentum_ != 0.0f) {
            m[i] = momentum_ * m[i] + g;
            w -= rate * m[i];
          } else {
            w -= rate * g;
          }
        } else {
          m[i] = beta1 * m[i] + (1.0f - beta1) * g;
          v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
          w -= rate * (m[i] / correction1) / (std::sqrt(v[i] / correction2) + eps);
        }
        if (p.clip > 0.0f) w = w < -p.clip ? -p.clip : (w > p.clip ? p.clip : w);
        p.value[i] = w;
      }
    });
  }
}

std::vector<std::vector<float>> optimizer::state() const {
  std::vector<std::vector<float>> out = first_;
  out.insert(out.end(), second_.begin(), second_.end());
  return out;
}

void optimizer::restore(const std::vector<std::vector<float>>& state, std::int64_t steps) {
  if (state.size() != first_.size() + second_.size()) throw error("optimizer state does not match the network");
  for (std::size_t i = 0; i < first_.size(); ++i) {
    if (state[i].size() != first_[i].size() || state[first_.size() + i].size() != second_[i].size())
      throw error("optimizer state does not match the network");
    first_[i] = state[i];
    second_[i] = state[first_.size() + i];
  }
  steps_ = steps;
}

}  // namespace fewmul::detail
