#include "train/optimizer.hpp"

#include <algorithm>
#include <cmath>

#include "fewmul/error.hpp"

#include "runtime/parallel_gemm.hpp"

namespace fewmul::detail {

optimizer::optimizer(optimizer_kind kind, float momentum, std::vector<parameter*> params)
    : kind_(kind), momentum_(momentum), params_(std::move(params)) {
  for (parameter* p : params_) {
    first_.emplace_back(p->value.size(), 0.0f);
    second_.emplace_back(kind_ == optimizer_kind::sgd ? 0 : p->value.size(), 0.0f);
  }
  slices_.assign(params_.size(), nullptr);
}

void optimizer::step(float lr, const runtime& rt, const kernels::kernel_table& k, const batch_split* split) {
  ++steps_;
  // Deferred gradients: every process's parts readable (a barrier over processes, every step: it also ends the
  // step's use of the collective's memory), then read in place below.
  if (split && split->comm->size > 1 && split->comm->share_gradients)
    split->comm->share_gradients(split->comm->context);
  auto deferred_of = [&](const parameter& p) -> const deferred_gradient* {
    if (split)
      for (const deferred_gradient& d : split->deferred)
        if (d.grad == p.grad.data()) return &d;
    return nullptr;
  };
  constexpr float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  const float correction1 = 1.0f - std::pow(beta1, static_cast<float>(steps_));
  const float correction2 = 1.0f - std::pow(beta2, static_cast<float>(steps_));
  for (std::size_t pi = 0; pi < params_.size(); ++pi) {
    parameter& p = *params_[pi];
    const float rate = lr * p.lr_scale;
    const float clip = p.clip;
    float* w = p.value.data();
    // The gradient, or the parts (part-major) the layers left for this pass to fold: g_q[i] = g[q n + i].
    const deferred_gradient* deferred = deferred_of(p);
    const float* g = deferred ? deferred->partials : p.grad.data();
    const std::size_t parts = deferred ? deferred->parts : 1;
    float* m1 = first_[pi].data();
    float* m2 = second_[pi].data();
    // A gradient in slices: this process's elements [b, b + n) only (gather_slices brings the others').
    const std::size_t b = deferred && deferred->slices ? deferred->slices[split->comm->rank] : 0;
    const std::size_t n = deferred && deferred->slices ? deferred->slices[split->comm->rank + 1] - b : p.value.size();
    const std::size_t stride = p.value.size();
    if (deferred && deferred->slices) {
      slices_[pi] = deferred->slices;
      comm_ = split->comm;
    }
    w += b;
    g += b;
    if (!first_[pi].empty()) m1 += b;
    if (!second_[pi].empty()) m2 += b;
    // The clip in the same pass; without one the bounds are infinite (they then clip nothing, NaN included).
    const float lo = clip > 0.0f ? -clip : -INFINITY, hi = clip > 0.0f ? clip : INFINITY;
    if (kind_ == optimizer_kind::shift_adamax) {
      // Shift-based AdaMax (Hubara et al., Algorithm 4): theta -= (lr <<>> (1 - beta1^t)^-1) *
      // (m <<>> v^-1), where x <<>> y = x * AP2(y); the learning rate is rounded with AP2 as well, so
      // both factors are powers of two and the update is an exponent add on m. AP2 per element: here, not
      // in the update_weights kernel.
      const float step = ap2(rate * ap2(1.0f / correction1));
      parallel_rows(rt, n, 16384, [&](std::size_t i0, std::size_t i1) {
        for (std::size_t i = i0; i < i1; ++i) {
          float gi = g[i];
          for (std::size_t q = 1; q < parts; ++q) gi += g[q * stride + i];
          m1[i] = beta1 * m1[i] + (1.0f - beta1) * gi;
          m2[i] = std::max(beta2 * m2[i], std::fabs(gi));
          w[i] = std::min(std::max(w[i] - step * (m1[i] * ap2(1.0f / (m2[i] + eps))), lo), hi);
        }
      });
      continue;
    }
    kernels::update_weights_params u{.n = 0, .w = w, .g = g, .g_parts = parts, .g_stride = stride, .m1 = m1, .m2 = m2};
    u.lo = lo;
    u.hi = hi;
    u.beta1 = beta1;
    u.beta2 = beta2;
    u.eps = eps;
    u.correction1 = correction1;
    u.correction2 = correction2;
    switch (kind_) {
      case optimizer_kind::adam:
        u.rule = kernels::update_rule::adam;
        u.rate = rate;
        break;
      case optimizer_kind::adamax:  // AdaMax (Kingma & Ba): v = max(beta2 v, |g|), step = lr / (1 - beta1^t) * m / v
        u.rule = kernels::update_rule::adamax;
        u.rate = rate / correction1;
        break;
      default:
        u.rule = momentum_ != 0.0f ? kernels::update_rule::momentum : kernels::update_rule::sgd;
        u.rate = rate;
        u.momentum = momentum_;
        break;
    }
    parallel_rows(rt, n, 16384, [&](std::size_t i0, std::size_t i1) {
      kernels::update_weights_params chunk = u;
      chunk.n = i1 - i0;
      chunk.w += i0;
      chunk.g += i0;
      if (chunk.m1) chunk.m1 += i0;
      if (chunk.m2) chunk.m2 += i0;
      k.update_weights(chunk);
    });
  }
  if (split) split->deferred.clear();
}

void optimizer::gather_slices() {
  std::vector<std::size_t> bytes;
  auto gather = [&](std::vector<float>& v, const std::size_t* slices) {
    if (v.empty()) return;
    bytes.resize(static_cast<std::size_t>(comm_->size) + 1);
    for (std::size_t r = 0; r < bytes.size(); ++r) bytes[r] = slices[r] * sizeof(float);
    const void* all = comm_->gather_ranges(comm_->context, v.data() + slices[comm_->rank], bytes.data(), v.data());
    if (all != v.data()) std::copy_n(static_cast<const float*>(all), v.size(), v.data());
  };
  if (std::none_of(slices_.begin(), slices_.end(), [](const std::size_t* s) { return s != nullptr; })) return;
  // The gathers go through the collective's memory of a step (collective.hpp): first every process past its
  // reads of the last step's, at the end every process past its reads of these (a share_gradients each).
  auto share = [&] {
    if (comm_->share_gradients) comm_->share_gradients(comm_->context);
  };
  share();
  for (std::size_t pi = 0; pi < params_.size(); ++pi) {
    if (slices_[pi] == nullptr) continue;
    gather(params_[pi]->value, slices_[pi]);
    gather(first_[pi], slices_[pi]);
    gather(second_[pi], slices_[pi]);
    slices_[pi] = nullptr;
  }
  share();
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
