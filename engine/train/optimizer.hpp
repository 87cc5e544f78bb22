#pragma once
#include <vector>

#include "fewmul/network.hpp"
#include "fewmul/train.hpp"

namespace fewmul::detail {

/// SGD (optional momentum) or Adam over a fixed list of parameters; applies each parameter's
/// learning-rate scale and clip after the update.
class optimizer {
 public:
  optimizer(optimizer_kind kind, float momentum, std::vector<parameter*> params);
  /// One step with learning rate `lr`; the update itself is k.update_weights (shift-based AdaMax: here).
  void step(float lr, const runtime& rt, const kernels::kernel_table& k);
  /// Moments and step count, for checkpoints.
  std::vector<std::vector<float>> state() const;
  std::int64_t steps() const { return steps_; }
  void restore(const std::vector<std::vector<float>>& state, std::int64_t steps);

 private:
  optimizer_kind kind_;
  float momentum_;
  std::vector<parameter*> params_;
  std::vector<std::vector<float>> first_, second_;
  std::int64_t steps_ = 0;
};

}  // namespace fewmul::detail
