#pragma once
// The forward pass y = a W^T of binary or k-bit weights on k-bit quantized inputs (BNN/QNN hidden layers)
// as XNOR-popcount over bit planes, with a convolution's zero padding corrected exactly. weight_core owns
// one and hands it its weight planes whenever it packs them.
#include <cstdint>
#include <vector>

#include "fewmul/network.hpp"

namespace fewmul::detail {

/// The word-interleaved weights gemm_xnor reads: bt[j][w][o] = word w of row o of plane j, for the
/// (plane, word) pairs p = j * words + w in [p0, p1); `planes` is [count][outputs][words].
void interleave_plane_words(const std::uint64_t* planes, std::size_t outputs, std::size_t words, std::size_t p0,
                            std::size_t p1, std::uint64_t* bt) noexcept;

/// y[rows][outputs] = a[rows][inputs] W^T with W given as `weight_planes` ±1 planes [planes][outputs][words(inputs)]
/// (the planes set_weights saw last) and a's values read as `input_bits`-bit levels.
struct xnor_product {
  const float* a;
  std::size_t rows, inputs, outputs;
  int input_bits;
  const std::uint64_t* planes;
  int weight_planes;
  float* y;
};

class xnor_forward {
 public:
  /// Convolutions: which inputs of a row are zero padding. Row r follows pattern
  /// row_pattern[r % row_pattern.size()], and pattern p pads the inputs padded[p].
  void set_padding(std::vector<std::uint32_t> row_pattern, std::vector<std::vector<std::uint32_t>> padded) {
    row_pattern_ = std::move(row_pattern);
    padded_ = std::move(padded);
  }
  /// The weights changed: keeps the word-interleaved copy of `count` planes [count][outputs][words] that
  /// run() reads; the padding corrections go stale.
  void set_weights(const std::uint64_t* planes, std::size_t count, std::size_t outputs, std::size_t words,
                   const step_context& ctx);
  void run(const xnor_product& p, const step_context& ctx);

 private:
  void padding_corrections(const xnor_product& p);

  std::vector<std::uint32_t> row_pattern_;  // convolutions: padding pattern of each output position
  std::vector<std::vector<std::uint32_t>> padded_;
  std::vector<std::int64_t> corrections_;    // [pattern][out]: the padded inputs' share of the integer sum
  int corrections_bits_ = -1;                // input bits corrections_ was computed for; -1: stale
  std::vector<std::uint64_t> bt_;            // [planes][words(in)][out]: word w of every output's weight row
  std::vector<std::uint64_t> input_planes_;  // [input bits][rows][words(in)]
  std::vector<std::int32_t> counts_;         // [rows][out]
  std::vector<std::int64_t> sums_;           // [rows][out]: sums over plane pairs (k-bit)
};

}  // namespace fewmul::detail
