#pragma once
// The weights of a dense or convolutional layer and the three products such a layer needs over
// row-major activations: forward y = a W^T, input gradient dx = dy W and weight gradient dW = dy^T x.
// A convolution is the same products over im2col rows, so both layers share this one implementation.
#include <cstdint>
#include <vector>

#include "fewmul/network.hpp"

namespace fewmul::detail {

class byte_writer;
class byte_reader;

/// One block [i0, i1) x [j0, j1) of out[rows][width] = a[rows][depth] · W for binary or k-bit weights W
/// given as `planes` ±1 bit planes, each depth x width bits (row stride words_for(width)), `plane_words`
/// apart: out = (sum_j 2^j a · plane_j) / L, L = 2^planes - 1, one gemm_binary per plane summed by
/// exact Horner doublings, then one multiplication by 1/L (none for one plane). `scratch` has out's shape
/// (unused for one plane). The layers and packed_mlp both call it, so their float paths give the same bits.
void binary_planes_block(const kernels::kernel_table& k, int planes, const float* a, std::size_t depth,
                         const std::uint64_t* planes_t, std::size_t plane_words, std::size_t width, float* out,
                         float* scratch, std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1);

/// The word-interleaved weights gemm_xnor reads: bt[j][w][o] = word w of row o of plane j, for the
/// (plane, word) pairs p = j * words + w in [p0, p1); `planes` is [count][outputs][words].
void interleave_plane_words(const std::uint64_t* planes, std::size_t outputs, std::size_t words, std::size_t p0,
                            std::size_t p1, std::uint64_t* bt) noexcept;

class weight_core {
 public:
  /// `fan` is fan_in + fan_out (Glorot initialization for fp32, learning-rate scale otherwise).
  /// `initialize` false leaves the weights unallocated for read() to fill.
  weight_core(std::size_t inputs, std::size_t outputs, const dense_options& options, std::uint64_t init_seed, float fan,
              bool initialize = true);

  std::size_t inputs() const { return in_; }
  std::size_t outputs() const { return out_; }
  const dense_options& options() const { return options_; }
  /// The master weights (and gradient): weights read packed are decoded into floats on first use.
  parameter& weight() {
    materialize();
    return weight_;
  }
  /// Binary and k-bit weights read from a model stay packed, [planes][outputs][words(inputs)], until
  /// something needs them as floats (training, the float-path products): the planes, else nullptr.
  const std::uint64_t* resident_planes() const { return weight_.value.empty() ? loaded_planes_.data() : nullptr; }
  /// Inputs are k-bit quantized activations (0: arbitrary floats) at inference and in training; binary
  /// and k-bit weights then run the forward pass as XNOR-popcount over bit planes.
  void set_input_bits(int inference_bits, int training_bits) {
    input_bits_[0] = inference_bits;
    input_bits_[1] = training_bits;
  }
  /// Convolutions: which inputs of a row are zero padding. Row r follows pattern
  /// row_pattern[r % row_pattern.size()], and pattern p pads the inputs padded[p]. The XNOR forward reads
  /// a padded 0 as the level 0 rounds to and subtracts that share again, so it stays exact.
  void set_padding(std::vector<std::uint32_t> row_pattern, std::vector<std::vector<std::uint32_t>> padded) {
    row_pattern_ = std::move(row_pattern);
    padded_ = std::move(padded);
  }
  /// Bit planes of the weights: 1 for binary, k for k-bit, 0 otherwise.
  int weight_planes() const;
  /// Bits of the inputs in this pass when the forward pass runs as XNOR-popcount, else 0.
  int xnor_input_bits(bool training) const { return weight_planes() > 0 ? input_bits_[training ? 1 : 0] : 0; }
  /// The deterministic packed weights used at inference: weight_planes() planes of [outputs][words(inputs)].
  std::vector<std::uint64_t> inference_planes() const;
  /// Drops the cached packed weights (the master weights changed).
  void invalidate() { inference_packed_ = expectation_ready_ = false; }

  /// Samples (training) or packs (inference) the weights every product of this step uses; `layer`
  /// is part of the random key.
  void prepare(const step_context& ctx, std::uint32_t layer);
  /// y[rows][outputs] = a[rows][inputs] W^T (row strides = the widths).
  void forward(const float* a, std::size_t rows, float* y, const step_context& ctx);
  /// dx[rows][inputs] = dy[rows][outputs] W.
  void input_gradient(const float* dy, std::size_t rows, float* dx, const step_context& ctx);
  /// The forward of a convolution with these weights read from its `images` input maps in place (the
  /// conv_binary kernel: same bits as forward() on the im2col rows). Runs, and returns true, only where
  /// forward() would take gemm_binary (binary weights, float inputs, not E[W]) and the shape fits.
  bool forward_conv_binary(const float* x, std::size_t images, const conv_shape& s, float* y, const step_context& ctx);
  /// grad[outputs][inputs] = dy^T x over `rows` rows. With quantized backprop x is first rounded to
  /// powers of two (random stream keyed by the step, `layer` and `part`) and the products are shifts.
  void weight_gradient(const float* dy, const float* x, std::size_t rows, float* grad, std::uint32_t layer,
                       std::uint64_t part, const step_context& ctx);
  /// dW for inputs that are exactly +-1 (a sign activation's output): dW[o][i] = sum_r (x >= 0 ? dy : -dy),
  /// additions only, on gemm_binary (grouped sums: not the bits of weight_gradient's gemm_f32).
  void weight_gradient_pm1(const float* dy, const float* x, std::size_t rows, float* grad, const step_context& ctx);
  /// QBP: x's `count` values stochastically rounded to power-of-two codes with the stream of (layer, part);
  /// element i draws random number index0 + i.
  void quantize_inputs(const float* x, std::size_t count, std::int8_t* codes, std::uint32_t layer, std::uint64_t part,
                       std::uint32_t index0, const step_context& ctx) const;
  /// QBP weight gradient from inputs already rounded to codes ([rows][inputs]), e.g. a convolution's
  /// im2col of its once-quantized input map.
  void weight_gradient_codes(const float* dy, const std::int8_t* codes, std::size_t rows, float* grad,
                             std::uint32_t layer, const step_context& ctx);

  /// Options and weights (packed: deterministic bits) in the format of the dense layer.
  void write(byte_writer& out, bool packed) const;
  /// Reads what write() wrote (after the layer's own header), given the shape.
  void read(byte_reader& in, bool packed);
  static dense_options read_options(byte_reader& in);
  /// Throws unless the payload still holds the weights of such a layer (before allocating them).
  static void expect_payload(byte_reader& in, std::size_t inputs, std::size_t outputs, const dense_options& o,
                             bool packed);
  /// Ops of one weight product over `rows` rows (forward, input gradient or weight gradient).
  void count_product(op_counts& c, double rows, bool weight_gradient, bool input_gradient = false) const;
  std::string kind_name() const;

 private:
  struct weight_view {
    const float* values;
    bool values_transposed;  // values is [width][depth] (the master weights read in place), else [depth][width]
    const std::uint64_t* sign;
    const std::uint64_t* nonzero;
    std::size_t plane_words;  // words between consecutive bit planes of `sign`
  };
  void materialize();
  void forward_xnor(const float* a, std::size_t rows, int input_bits, float* y, const step_context& ctx);
  void pack_planes(const step_context& ctx, kernels::sample_mode mode, std::uint64_t key, bool from_loaded);
  void padding_corrections(int input_bits);
  void multiply(weight_kind kind, const float* a, std::size_t rows, std::size_t depth, std::size_t width,
                const weight_view& w, float* out, const step_context& ctx);
  void multiply_planes(int planes, const float* a, std::size_t rows, std::size_t depth, std::size_t width,
                       const weight_view& w, float* out, const step_context& ctx);
  void transpose_master(const step_context& ctx);
  void transpose(const std::uint64_t* rows_o, std::uint64_t* rows_i, const step_context& ctx) const;
  [[noreturn]] void throw_exploding_gradient(std::uint32_t layer, const step_context& ctx) const;

  std::size_t in_, out_;
  dense_options options_;
  parameter weight_;                          // [out][in]; empty while the weights are loaded_planes_
  std::vector<std::uint64_t> loaded_planes_;  // packed binary/k-bit weights as read, [planes][out][words(in)]
  bool inference_packed_ = false;
  bool expectation_ready_ = false;
  bool use_expectation_ = false;
  int input_bits_[2] = {0, 0};              // inference, training
  std::vector<std::uint32_t> row_pattern_;  // convolutions: padding pattern of each output position
  std::vector<std::vector<std::uint32_t>> padded_;
  std::vector<std::int64_t> corrections_;    // [pattern][out]: the padded inputs' share of the integer sum
  int corrections_bits_ = -1;                // input bits corrections_ was computed for; -1: stale
  std::vector<std::uint64_t> xnor_bt_;       // [planes][words(in)][out]: word w of every output's weight row
  std::vector<std::uint64_t> input_planes_;  // [input bits][rows][words(in)]
  std::vector<std::int32_t> counts_;         // [rows][out]
  std::vector<std::int64_t> sums_;           // [rows][out]: sums over plane pairs (k-bit)
  std::vector<float> plane_out_;             // [rows][width]: one weight plane's product (k-bit)
  // Binary and k-bit weights: `sign_` holds the planes one after another, [planes][out][words(in)],
  // and `sign_t_` their transposes [planes][in][words(out)]. Ternary: sign_/nonzero_ as the kernels say.
  std::vector<std::uint64_t> sign_, nonzero_;
  std::vector<std::uint64_t> sign_t_, nonzero_t_;
  std::vector<float> transposed_;  // fp32 W^T [in][out]
  std::vector<std::int8_t> codes_;
  std::vector<std::uint64_t> input_sign_;  // weight_gradient_pm1: the inputs' sign bits
};

}  // namespace fewmul::detail
