#pragma once
// The weights of a dense or convolutional layer and the three products such a layer needs over
// row-major activations: forward y = a W^T, input gradient dx = dy W and weight gradient dW = dy^T x.
// A convolution is the same products over im2col rows, so both layers share this one implementation.
// What differs per weight kind is in the table of weight_kinds.hpp; the XNOR-popcount forward pass is
// xnor_forward.cpp; the model-file form of the weights is weight_io.cpp.
#include <cstdint>
#include <vector>

#include "fewmul/network.hpp"
#include "layers/weight_kinds.hpp"
#include "layers/xnor_forward.hpp"

namespace fewmul::detail {

class byte_writer;
class byte_reader;

/// Rows [begin, end) of a weight gradient [outputs][inputs] (end clipped to the outputs): the slice of the
/// outputs one process computes (collective.hpp); the default is all of them.
struct output_range {
  std::size_t begin = 0, end = static_cast<std::size_t>(-1);
};

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
    xnor_.set_padding(std::move(row_pattern), std::move(padded));
  }
  /// Bit planes of the weights: 1 for binary, k for k-bit, 0 otherwise.
  int weight_planes() const { return traits_->planes ? traits_->arrays(options_) : 0; }
  /// Bits of the inputs in this pass when the forward pass runs as XNOR-popcount, else 0.
  int xnor_input_bits(bool training) const { return weight_planes() > 0 ? input_bits_[training ? 1 : 0] : 0; }
  /// The deterministic packed weights used at inference: the kind's bit arrays of [outputs][words(inputs)]
  /// (weight_kinds.hpp; binary and k-bit: weight_planes() planes; fp32: none).
  std::vector<std::uint64_t> inference_planes() const;
  /// Whether training samples the weights (into bits) instead of reading the master weights.
  bool sampled() const { return traits_->sampled; }
  /// Drops the cached packed weights (the master weights changed).
  void invalidate() { inference_packed_ = expectation_ready_ = false; }

  /// Samples (training) or packs (inference) the weights every product of this step uses; `layer`
  /// is part of the random key. With `process_rows` (training with several processes, size + 1 output rows,
  /// each a multiple of 32 but the last) this process samples its rows only and gathers the others' samples
  /// from them (its copy of their master weights may be stale: collective.hpp, update_in_slices).
  void prepare(const step_context& ctx, std::uint32_t layer, const std::size_t* process_rows = nullptr);
  /// y[rows][outputs] = a[rows][inputs] W^T (row strides = the widths).
  void forward(const float* a, std::size_t rows, float* y, const step_context& ctx);
  /// dx[rows][inputs] = dy[rows][outputs] W.
  void input_gradient(const float* dy, std::size_t rows, float* dx, const step_context& ctx);
  /// The forward of a convolution with these weights read from its `images` input maps in place (the
  /// conv_binary kernel: same bits as forward() on the im2col rows). Runs, and returns true, only where
  /// forward() would take gemm_binary (binary weights, float inputs, not E[W]) and the shape fits.
  bool forward_conv_binary(const float* x, std::size_t images, const conv_shape& s, float* y, const step_context& ctx);
  /// The input gradient of a "same" convolution with these weights, read from its `images` output-gradient maps
  /// in place: the transposed convolution is the same-padded convolution of dy with the kernel flipped and its
  /// channels exchanged, run on conv_binary (no im2col matrix of dx, no col2im). Runs, and returns true, only for
  /// binary weights (not E[W]) and a shape conv_binary takes; its sums are grouped over (tap, output channel),
  /// not per tap and then over the taps as input_gradient + col2im.
  bool input_gradient_conv_binary(const float* dy, std::size_t images, const conv_shape& s, float* dx,
                                  const step_context& ctx);
  /// grad[outputs][inputs] = dy^T x over `rows` rows. With quantized backprop x is first rounded to
  /// powers of two (random stream keyed by the step, `layer` and `part`) and the products are shifts.
  /// Only grad's rows `outputs` are computed (the others are left alone): the same bits in them as a whole call.
  void weight_gradient(const float* dy, const float* x, std::size_t rows, float* grad, std::uint32_t layer,
                       std::uint64_t part, const step_context& ctx, output_range outputs = {});
  /// weight_gradient without quantized backprop for x given as an indirection buffer, a convolution's implicit
  /// im2col: x[r][i] = x_rows[r * (inputs / segment) + i / segment][i % segment] (gemm_f32_params::b_rows; inputs
  /// a multiple of segment). The same bits as weight_gradient on the explicit matrix.
  void weight_gradient_implicit(const float* dy, const float* const* x_rows, std::size_t segment, std::size_t rows,
                                float* grad, const step_context& ctx);
  /// dW for inputs that are exactly +-1 (a sign activation's output): dW[o][i] = sum_r (x >= 0 ? dy : -dy),
  /// additions only, on gemm_binary (grouped sums: not the bits of weight_gradient's gemm_f32).
  void weight_gradient_pm1(const float* dy, const float* x, std::size_t rows, float* grad, const step_context& ctx,
                           output_range outputs = {});
  /// QBP: x's `count` values stochastically rounded to power-of-two codes with the stream of (layer, part);
  /// element i draws random number index0 + i.
  void quantize_inputs(const float* x, std::size_t count, std::int8_t* codes, std::uint32_t layer, std::uint64_t part,
                       std::uint32_t index0, const step_context& ctx) const;
  /// QBP weight gradient from inputs already rounded to codes ([rows][inputs]), e.g. a convolution's
  /// im2col of its once-quantized input map.
  void weight_gradient_codes(const float* dy, const std::int8_t* codes, std::size_t rows, float* grad,
                             std::uint32_t layer, const step_context& ctx, output_range outputs = {});
  /// weight_gradient_codes for codes given as an indirection buffer, a convolution's implicit im2col of its
  /// quantized maps: code[r][i] = code_rows[r * (inputs / segment) + i / segment][i % segment]
  /// (gemm_shift_params::q_rows). The same bits as on the explicit matrix.
  void weight_gradient_codes_implicit(const float* dy, const std::int8_t* const* code_rows, std::size_t segment,
                                      std::size_t rows, float* grad, std::uint32_t layer, const step_context& ctx);

  // Model and checkpoint files (weight_io.cpp).
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
  std::string kind_name() const { return traits_->name(options_); }

 private:
  // grad's rows `outputs` = dy^T B on gemm_f32, B the float inputs as `operand` gives them (b or b_rows).
  // shift_weight_gradient: the same on gemm_shift from codes (q or q_rows).
  void shift_weight_gradient(const float* dy, std::size_t rows, const kernels::gemm_shift_params& codes, float* grad,
                             std::uint32_t layer, const step_context& ctx, output_range outputs);
  void float_weight_gradient(const float* dy, std::size_t rows, const kernels::gemm_f32_params& operand, float* grad,
                             const step_context& ctx, output_range outputs);
  void materialize();
  void pack(const step_context& ctx, kernels::sample_mode mode, std::uint64_t key, bool from_loaded,
            const std::size_t* process_rows = nullptr);
  void multiply(const weight_kind_traits& kind, const float* a, std::size_t rows, std::size_t depth, std::size_t width,
                const weight_view& w, float* out, const step_context& ctx);
  // conv_binary over all output positions of `images` maps of `channels` channels, sign kernel of n columns.
  void run_conv_binary(const float* x, std::size_t images, const conv_shape& s, std::size_t channels,
                       const std::uint64_t* sign, std::size_t n, float* out, const step_context& ctx);
  void transpose_master(const step_context& ctx);
  void transpose(const std::uint64_t* rows_o, std::uint64_t* rows_i, const step_context& ctx) const;
  [[noreturn]] void throw_exploding_gradient(std::uint32_t layer, const step_context& ctx) const;

  std::size_t in_, out_;
  dense_options options_;
  const weight_kind_traits* traits_;          // options_.kind's entry
  parameter weight_;                          // [out][in]; empty while the weights are loaded_planes_
  std::vector<std::uint64_t> loaded_planes_;  // packed binary/k-bit weights as read, [planes][out][words(in)]
  bool inference_packed_ = false;
  bool expectation_ready_ = false;
  bool use_expectation_ = false;
  int input_bits_[2] = {0, 0};  // inference, training
  xnor_forward xnor_;
  // The sampled weights as the kind's bit arrays one after another, [arrays][out][words(in)], and their
  // transposes [arrays][in][words(out)] (weight_kinds.hpp).
  std::vector<std::uint64_t> bits_, bits_t_;
  // For input_gradient_conv_binary: the sampled ±1 kernel flipped, [tap][out][words(in channels)], rebuilt
  // after each pack.
  std::vector<std::uint64_t> flipped_;
  bool flipped_ready_ = false;
  std::vector<float> plane_out_;   // [rows][width]: one weight plane's product (k-bit)
  std::vector<float> transposed_;  // fp32 W^T [in][out]
  std::vector<std::int8_t> codes_;
  std::vector<std::uint64_t> input_sign_;    // weight_gradient_pm1: the inputs' sign bits
  std::vector<std::size_t> gather_offsets_;  // pack with process_rows: bytes of each process's rows
};

}  // namespace fewmul::detail
