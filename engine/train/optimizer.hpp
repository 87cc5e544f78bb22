#pragma once
#include <vector>

#include "fewmul/collective.hpp"
#include "fewmul/network.hpp"
#include "fewmul/train.hpp"

namespace fewmul::detail {

/// SGD (optional momentum) or Adam over a fixed list of parameters; applies each parameter's
/// learning-rate scale and clip after the update.
class optimizer {
 public:
  optimizer(optimizer_kind kind, float momentum, std::vector<parameter*> params);
  /// One step with learning rate `lr`; the update itself is k.update_weights (shift-based AdaMax: here).
  /// Gradients the layers left unfolded (split->deferred, collective.hpp) are folded over the parts in the
  /// update's pass, in part order (the same bits as folding first); the list is emptied.
  void step(float lr, const runtime& rt, const kernels::kernel_table& k, const batch_split* split = nullptr);
  /// A gradient computed in slices (deferred_gradient::slices) updates only this process's slice of its
  /// parameter and moments; this gathers the others' slices into them (every process calls it, at the same
  /// point: before anything but the layers' sampling reads the parameters, or state()).
  void gather_slices();
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
  // Per parameter: the slices of the last update in slices (null: updated whole), and their processes.
  std::vector<const std::size_t*> slices_;
  collective* comm_ = nullptr;
};

}  // namespace fewmul::detail
