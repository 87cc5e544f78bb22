#pragma once
// Inference of a trained BNN/QNN MLP with the activations kept as bit planes from layer to layer.
//
// network::forward runs a BNN's hidden layers as XNOR-popcount but hands float activations (±1) from
// layer to layer. packed_mlp compiles each hidden block dense -> batch norm -> sign (or k-bit
// activation) into one XNOR-popcount GEMM per pair of bit planes followed by integer thresholds per
// output channel, which write the next block's input bit planes directly: no float activations at all.
//
// Thresholds. A block's integer sum S (see kernels.hpp, "k-bit levels") becomes the level
// u = q(bn(y(S))), with y(S) the float the training path computes from S, bn the layer's inference
// expression and q the activation's rounding. Every step is monotone in S (float rounding is
// monotone; bn is increasing for gamma > 0 and decreasing for gamma < 0), so u >= l exactly when
// S >= t_l (or S <= t_l for gamma < 0), where t_l is found once by binary search over the integer
// range of S with the very same float expression. The packed path therefore reproduces the float
// path's activations bit for bit; gamma = 0 gives a constant level.
//
// The first layer runs on the 8 bit planes of the input bytes when every input of the batch is a
// multiple of 1/255 in [0, 1] (MNIST): with b_i the 0/1 planes of the byte p and s the ±1 weights,
//   sum_k s_k p_k = sum_i 2^i (xnor_dot(s, b_i) + sum_k s_k) / 2,
// since xnor_dot(s, b) = sum_k s_k (2 b_k - 1). That sum is exact, where the float path rounds, so
// first-layer activations can differ from network::forward where a value sits on a threshold.
// Other inputs take the float path of the first layer (masked adds), identical to network::forward.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fewmul/network.hpp"

namespace fewmul {

class packed_mlp {
 public:
  /// Compiles `net`, which must be [dropout] dense -> batch norm, then (activation [dropout] dense ->
  /// batch norm)..., with binary or k-bit dense weights, per-feature batch norms, and sign or k-bit
  /// activations; throws fewmul::error naming the first layer that does not fit.
  explicit packed_mlp(const network& net);
  ~packed_mlp();
  packed_mlp(packed_mlp&&) noexcept;
  packed_mlp& operator=(packed_mlp&&) noexcept;

  std::size_t input_size() const;
  std::size_t output_size() const;
  /// scores[rows][output_size()] of x[rows][input_size()] (row-major), as network::forward at inference.
  void run(const float* x, std::size_t rows, float* scores, const runtime& rt);
  /// True when the last run() took the 8-bit first-layer path.
  bool last_run_used_input_bytes() const { return used_bytes_; }
  /// E.g. "784 -(bytes, 1b w)-> 4096 [1b] -(1b w)-> 4096 [1b] -> 10".
  std::string describe() const;
  /// Bytes of the compiled weights, thresholds and batch-norm constants.
  std::size_t bytes() const;

 private:
  struct stage;
  void run_first(const stage& st, const float* x, std::size_t rows, float* scores, const runtime& rt);
  void run_hidden(const stage& st, std::size_t rows, float* scores, const runtime& rt);
  void finish(const stage& st, std::size_t rows, std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1,
              const std::int32_t* sums, const float* values, float* scores);

  std::vector<stage> stages_;
  std::vector<std::uint64_t> planes_in_, planes_out_;  // activation bit planes [bits][rows][words]
  std::vector<std::int32_t> counts_;
  std::vector<std::int32_t> sums_;
  std::vector<float> floats_, plane_floats_;
  bool used_bytes_ = false;
};

}  // namespace fewmul
