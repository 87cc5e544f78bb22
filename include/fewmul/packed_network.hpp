#pragma once
// Inference of a trained BNN/QNN (MLP or convnet) with the activations kept as bit planes from the first
// layer's output to the last layer's input.
//
// network::forward runs a BNN's hidden layers as XNOR-popcount but hands float activations (±1) from
// layer to layer. packed_network compiles each block weights -> [max-pool] -> batch norm -> sign (or
// k-bit activation) into XNOR-popcount GEMMs per pair of bit planes followed by integer thresholds per
// output channel, which write the next block's input bit planes directly: no float activations at all.
//
// Layout. Activations are channel-last bit planes: plane i of a map holds, for every example and position
// (y, x), words_for(channels) words of bit i of each channel's level (bit 1 = +1, the engine's convention,
// padding bits 0). A convolution gathers the words of its kernel's taps into one row per output
// position (im2col on words, not on floats), so the K of its GEMM is taps x words_for(channels) words
// and k_bits = taps x channels: the padding bits are 0 in both operands and count nothing. Weights are
// rearranged once into the same per-tap word layout; a dense layer after a convolution reads the flattened
// map the same way, one "tap" per position.
//
// Zero padding. The float path's padded inputs are 0, which no level is. The packed path stores them as
// all-zero words, i.e. level 0 in every plane, value -L_a in the integer sum's units, so the sum holds an
// extra -L_a * w_int per padded tap and channel (w_int = sum_j 2^j (±1)_j, the weight's odd integer). That
// share depends only on which taps are padded (at most kernel^2 patterns, by border class), and is added
// back exactly from a table [pattern][channel].
//
// Thresholds. A block's integer sum S (see kernels.hpp, "k-bit levels") becomes the level
// u = q(bn(y(S))), with y(S) the float the training path computes from S, bn the layer's inference
// expression and q the activation's rounding. Every step is monotone in S (float rounding is monotone; bn
// is increasing for gamma > 0 and decreasing for gamma < 0), so u >= l exactly when S >= t_l (or
// S <= t_l for gamma < 0), where t_l is found once by binary search over the integer range of S with the
// very same float expression. gamma = 0 gives a constant level.
//
// Max-pooling. The layers pool the convolution's outputs y(S) before batch norm; y is non-decreasing in
// S, so max y(S) = y(max S): the packed path pools the integer sums, which is exact.
//
// First layer. On the 8 bit planes of the input bytes when every input of the batch is a multiple of
// 1/255 in [0, 1] (MNIST, CIFAR-10 without preprocessing): with b_i the 0/1 planes of the byte p and s
// the ±1 weights, sum_k s_k p_k = sum_i 2^i (xnor_dot(s, b_i) + sum_k s_k) / 2, since
// xnor_dot(s, b) = sum_k s_k (2 b_k - 1); a padded pixel has p = 0 in every plane and needs no
// correction. That sum is exact, where the float path rounds, so first-layer activations can differ from
// network::forward where a value sits on a threshold. Other inputs take the float path of the first layer
// (the layers' im2col and masked adds), identical to network::forward, whose float outputs y are compared
// with per-channel float thresholds found the same way, by binary search over the floats in their order
// (exact for finite y).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fewmul/network.hpp"

namespace fewmul {

class packed_network {
 public:
  /// Compiles `net`: blocks of [dropout] weights -> [2x2 max-pool, after a convolution] -> batch norm ->
  /// sign or k-bit activation, convolutions first, ending in a dense layer -> batch norm; binary or k-bit
  /// weights, batch norms per channel. Throws fewmul::error naming the first layer that does not fit.
  explicit packed_network(const network& net);
  ~packed_network();
  packed_network(packed_network&&) noexcept;
  packed_network& operator=(packed_network&&) noexcept;

  std::size_t input_size() const;
  std::size_t output_size() const;
  /// scores[rows][output_size()] of x[rows][input_size()] (row-major, channel-last images), as
  /// network::forward at inference.
  void run(const float* x, std::size_t rows, float* scores, const runtime& rt);
  /// True when the last run() took the 8-bit first-layer path.
  bool last_run_used_input_bytes() const { return used_bytes_; }
  /// One entry per weight layer, e.g. "conv3x3 32x32x3->128 same binary(deterministic) [bytes/floats x 1b w ->
  /// 1b thresholds] | conv3x3 32x32x128->128 same binary(deterministic) [1b x 1b w, pooled sums -> 1b thresholds]".
  std::string describe() const;
  /// Bytes of the compiled weights, thresholds, padding corrections and batch-norm constants.
  std::size_t bytes() const;
  /// Frees the activation buffers run() sized (the next run() allocates them again).
  void release_buffers();

 private:
  struct stage;
  void run_stage(const stage& st, bool first, const float* x, std::size_t rows, float* scores, const runtime& rt);

  std::vector<stage> stages_;
  std::vector<std::uint64_t> planes_in_, planes_out_;  // activation bit planes [bits][rows * positions][words]
  std::vector<std::uint64_t> cols_;                    // bit im2col of one plane of a slab [rows][k_words]
  std::vector<float> float_cols_;                      // first layer on floats: im2col of a slab
  std::vector<std::int32_t> counts_, sums_;
  std::vector<float> floats_, plane_floats_;
  bool used_bytes_ = false;
};

}  // namespace fewmul
