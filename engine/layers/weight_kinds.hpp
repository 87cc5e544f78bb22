#pragma once
// One entry per weight_kind (fp32, binary, ternary, k-bit): how the sampled weights look as bits, how the
// master weights are sampled into them, which product kernel reads them, whether the products multiply,
// the kind's name and how its bits are stored in a model. weight_core, its serialization and the op
// counting read this table instead of switching on the kind; a new kind is one more entry.
//
// The sampled weights of a low-bit kind are `arrays` bit arrays of [rows][words(cols)] one after another:
// binary one ±1 sign plane, k-bit k ±1 planes (plane j weighted 2^j, w = (sum_j 2^j (±1)_j) / (2^k - 1)),
// ternary a sign array and a nonzero array. fp32 has none: its products read the floats.
#include <cstdint>
#include <string>

#include "fewmul/kernels.hpp"
#include "fewmul/network.hpp"

namespace fewmul::detail {

/// Rows [0, rows) of the master weights w (row stride `ld`) sampled into the kind's bit arrays at
/// `arrays` (`array_words` words apart, row stride `words`). Row 0 of w is element 0 of the random stream.
struct sample_args {
  const float* w;
  std::size_t rows, cols, ld;
  const dense_options& options;
  kernels::sample_mode mode;
  std::uint64_t key;
  std::uint64_t* arrays;
  std::size_t array_words, words;
};

/// The weights W [depth][width] a product reads: the floats (fp32) or the bit arrays (low-bit kinds).
struct weight_view {
  const float* values;
  bool values_transposed;     // values is [width][depth] (the master weights read in place), else [depth][width]
  const std::uint64_t* bits;  // the bit arrays, [arrays][depth][words(width)] (ternary: sign, then nonzero)
  std::size_t array_words;    // words between consecutive arrays
};

/// One block [i0, i1) x [j0, j1) of out[rows][width] = a[rows][depth] · W.
struct product_block {
  const float* a;
  std::size_t depth, width;
  const weight_view& w;
  int planes;  // ±1 planes of W (binary and k-bit)
  float* out;
  float* scratch;  // out's shape; the k-bit product's one-plane results
  std::size_t i0, i1, j0, j1;
};

struct weight_kind_traits {
  /// The kind as describe() names it: "fp32", "binary(stochastic)", "4-bit+qbp", ...
  std::string (*name)(const dense_options& o);
  /// The master weights are the latent variable of sampled low-bit weights (clipped to [-1, 1], initialized
  /// and learning-rate scaled after the method's paper) rather than the weights themselves (fp32).
  bool sampled;
  /// Each product multiplies (fp32); the low-bit kinds add or subtract, one masked add per ±1 plane.
  bool multiplies;
  /// The arrays are ±1 planes (binary, k-bit): the forward pass can run as XNOR-popcount, and a model's
  /// packed planes are kept as read until something needs floats.
  bool planes;
  /// The kind takes dense_options::weight_bits (stored in model files after the options).
  bool variable_bits;
  /// Bit arrays of the sampled weights (0: fp32).
  int (*arrays)(const dense_options& o);
  /// Names of the vectors a packed model stores the arrays in: one vector of all planes, or one per array.
  const char* stored_as[2];
  /// Samples the master weights into the arrays (nullptr: fp32).
  void (*sample)(const kernels::kernel_table& k, const sample_args& s);
  /// Row `row` (`cols` weights) of the arrays as floats into w; returns what is wrong with the bits or nullptr.
  const char* (*decode_row)(const std::uint64_t* arrays, std::size_t array_words, std::size_t words, std::size_t row,
                            std::size_t cols, const dense_options& o, float* w);
  /// One block of a product over W, on the kernel this kind's weights need.
  void (*multiply)(const kernels::kernel_table& k, const product_block& b);
  /// Throws unless the options fit this kind.
  void (*check)(const dense_options& o);
};

/// The table entry of `kind`.
const weight_kind_traits& kind_traits(weight_kind kind);
/// The number of weight kinds a model file may name (kinds are stored as their index).
inline constexpr std::uint8_t weight_kind_count = 4;

/// One block [i0, i1) x [j0, j1) of out[rows][width] = a[rows][depth] · W for binary or k-bit weights W
/// given as `planes` ±1 bit planes, each depth x width bits (row stride words_for(width)), `plane_words`
/// apart: out = (sum_j 2^j a · plane_j) / L, L = 2^planes - 1, one gemm_binary per plane summed by
/// exact Horner doublings, then one multiplication by 1/L (none for one plane). `scratch` has out's shape
/// (unused for one plane). The layers and packed_mlp both call it, so their float paths give the same bits.
void binary_planes_block(const kernels::kernel_table& k, int planes, const float* a, std::size_t depth,
                         const std::uint64_t* planes_t, std::size_t plane_words, std::size_t width, float* out,
                         float* scratch, std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1);

}  // namespace fewmul::detail
