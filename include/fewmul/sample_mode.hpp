#pragma once
/// How binary and ternary weights are sampled from their real-valued master weights (dense_options and the
/// pack kernels share it).
#include <cstdint>

namespace fewmul {

/// How to sample weights from real-valued master weights.
enum class sample_mode : std::uint8_t {
  deterministic,  ///< binary: w >= 0 -> +1; ternary: |w| >= 0.5 -> sign(w), else 0
  stochastic      ///< binary: P(+1) = clip((w+1)/2, 0, 1); ternary: P(sign(w)) = min(|w|, 1), else 0
};

namespace kernels {
using fewmul::sample_mode;  // the kernels' name for it (fewmul/kernels.hpp)
}  // namespace kernels

}  // namespace fewmul
