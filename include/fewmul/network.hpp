#pragma once
// Layers and networks. Layers own shapes, validation, threading and memory; kernels do the arithmetic.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fewmul/collective.hpp"
#include "fewmul/runtime.hpp"
#include "fewmul/sample_mode.hpp"
#include "fewmul/tensor.hpp"

namespace fewmul {

namespace kernels {
struct kernel_table;  // fewmul/kernels.hpp: the engine's kernels, which a layer may call through step_context
}  // namespace kernels

/// Arithmetic of one training step, by kind of operation (what the engine executes, not FLOPs).
struct op_counts {
  double multiplications = 0;
  double additions = 0;       ///< plain and masked adds/subtracts
  double shifts = 0;          ///< exponent adds replacing multiplications by powers of two
  double bit_operations = 0;  ///< ±1 x ±1 products done as XNOR-popcount (one per bit pair and plane pair)
  op_counts& operator+=(const op_counts& o) {
    multiplications += o.multiplications;
    additions += o.additions;
    shifts += o.shifts;
    bit_operations += o.bit_operations;
    return *this;
  }
};

/// A trainable tensor: master values, the gradient of the last backward pass, and how to update it.
struct parameter {
  std::string name;
  std::vector<float> value;
  std::vector<float> grad;
  float lr_scale = 1.0f;  ///< per-parameter learning-rate multiplier
  float clip = 0.0f;      ///< > 0: values are clipped to [-clip, clip] after each update
};

/// What a layer needs to know about the current step.
struct step_context {
  const runtime& rt;
  const kernels::kernel_table& kernels;
  std::uint64_t seed = 0;  ///< run seed (stochastic sampling keys derive from it)
  std::uint64_t step = 0;  ///< global minibatch counter
  bool training = false;   ///< batch statistics and stochastic sampling when true
  /// Inference only: layers trained with stochastic weights use their expectation E[Wb] = clip(W)
  /// (BinaryConnect's test-time protocol) instead of the deterministic binary/ternary weights, and batch
  /// norm its statistics re-estimated under E[Wb] where it has some (reestimate_batch_norm).
  bool expected_weights = false;
  /// Training: this process's share of the minibatch and how sums over it are combined (collective.hpp);
  /// null when the rows are the whole minibatch, summed as one part.
  const batch_split* split = nullptr;
};

/// Base class of all layers: y = f(x) on a minibatch held row-wise. A layer defined outside the engine
/// trains and runs like the engine's own; model and checkpoint files hold only the engine's layer types,
/// so saving a network that holds one throws fewmul::error naming it.
class layer {
 public:
  virtual ~layer() = default;
  /// Short description, e.g. "dense 784->1024 binary(stochastic)+qbp[-4,3]".
  virtual std::string describe() const = 0;
  virtual std::size_t input_size() const = 0;
  virtual std::size_t output_size() const = 0;
  /// y (resized by the layer) = f(x).
  virtual void forward(const matrix& x, matrix& y, const step_context& ctx) = 0;
  /// Given x, y of the last forward pass and dL/dy, sets parameter gradients and, when dx is not
  /// null, writes dL/dx.
  virtual void backward(const matrix& x, const matrix& y, const matrix& dy, matrix* dx, const step_context& ctx) = 0;
  /// Trainable parameters (empty for parameter-free layers).
  virtual std::vector<parameter*> parameters() { return {}; }
  /// Non-trained state that belongs to a model (batch-norm running statistics).
  virtual std::vector<std::vector<float>*> buffers() { return {}; }
  /// Called after the optimizer changed parameters (drops cached packed weights).
  virtual void parameters_changed() {}
  /// Operations of one training step (forward, input gradient when `input_gradient`, parameter
  /// gradients) on a minibatch of `batch` examples.
  virtual op_counts training_ops(std::size_t batch, bool input_gradient) const = 0;
  /// k > 0 when this layer's outputs are k-bit quantized activations (1: exactly ±1; k bits: the 2^k
  /// levels (2u - L)/L, u = 0..L, L = 2^k - 1), in training or at inference; 0 for anything else.
  virtual int output_bits(bool /*training*/) const { return 0; }
  /// Told by network::add what the previous layer's output_bits() are. Binary and k-bit dense layers
  /// then compute their forward pass as XNOR-popcount over bit planes of the inputs.
  virtual void set_input_bits(int /*inference_bits*/, int /*training_bits*/) {}
  /// Index of this layer in its network (part of the random keys).
  std::uint32_t index = 0;
};

/// Weight representation of a dense layer.
enum class weight_kind {
  fp32,
  binary,
  ternary,
  quantized  ///< QNN: k-bit weights, the 2^k levels (2u - L)/L (u = 0..L, L = 2^k - 1) held as k bit planes
};

/// Initialization and per-layer learning-rate scale of binary/ternary master weights, after the paper
/// each method comes from (the values are stored in model files: keep them).
enum class lr_scale_kind : std::uint8_t {
  /// Glorot-uniform start, no scale (fewmul's BNN before issue 15; kept to read older models).
  none = 0,
  /// Lin et al. (hantek/BinaryConnect layer.py): uniform in [-2, 2] clipped to the clip range [-1, 1]
  /// (half the weights start saturated), learning rate scaled by (fan_in + fan_out) / 1.5, the inverse
  /// Glorot factor squared: their SGD step on weights in units of W0 = sqrt(1.5 / fan) = 1.
  binary_connect = 1,
  /// Hubara et al. (MatthieuCourbariaux/BinaryNet Train-time/binary_net.py, H = 1., W_LR_scale =
  /// "Glorot"): uniform in [-1, 1], Adam's step scaled by 1 / sqrt(1.5 / (fan_in + fan_out)).
  binary_net = 2
};

/// How quantized backprop rounds a layer input to a power of two.
enum class qbp_rounding : std::uint8_t {
  /// fewmul's: exponents in [qbp_kmin, qbp_kmax]; |x| below 2^kmin becomes 0 or 2^kmin (unbiased), |x| of
  /// 2^kmax and more 2^kmax; zeros stay 0.
  unbiased = 0,
  /// The authors' dense layers (hantek/BinaryConnect layer.py linear_layer.quantized_bprop): floor(log2|x|)
  /// unclipped, up by one with probability |x| / 2^floor - 1; zeros stay 0. The engine's exponent range
  /// [-15, 15] bounds it (values beyond 2^15 or below 2^-15 do not reach a layer input after batch norm).
  authors_dense = 1,
  /// The authors' convolutions (layer.py conv_layer.quantized_bprop): floor(log2|x|) clipped to [qbp_kmin,
  /// qbp_kmax] before the stochastic step up, so levels reach 2^(kmax + 1) (16 for [-4, 3]) and every |x|
  /// below 2^kmin becomes sign(x) 2^kmin; exact zeros (T.switch(x > 0, 1, -1)) become -2^kmin.
  authors_conv = 2
};

/// Options of a dense layer.
struct dense_options {
  weight_kind kind = weight_kind::fp32;
  /// Sampling during training (inference always samples deterministically).
  sample_mode training_sampling = sample_mode::deterministic;
  /// Quantized backprop: the weight gradient uses the layer input rounded stochastically to powers of
  /// two in [2^qbp_kmin, 2^qbp_kmax], computed with shifts.
  bool qbp = false;
  int qbp_kmin = -4;
  int qbp_kmax = 3;
  /// Rounding of quantized backprop; make_network gives convolutions authors_conv where the options say
  /// authors_dense (training setting only: not stored in model files).
  qbp_rounding qbp_round = qbp_rounding::unbiased;
  /// How binary/ternary master weights start and how their learning rate is scaled (fp32 ignores it).
  lr_scale_kind lr_scale = lr_scale_kind::binary_connect;
  /// Bits per weight of weight_kind::quantized (2..8; deterministic rounding to the nearest level).
  int weight_bits = 2;
};

/// Fully connected layer without bias (a batch-norm layer follows it in every preset).
std::unique_ptr<layer> make_dense(std::size_t inputs, std::size_t outputs, const dense_options& options,
                                  std::uint64_t init_seed);
/// Batch normalization over features, with learned scale/shift and running statistics for inference.
std::unique_ptr<layer> make_batch_norm(std::size_t features, float epsilon = 1e-4f, float momentum = 0.1f);
/// Shift-based batch normalization (Hubara et al., Algorithm 3): the products of the variance, the
/// scaling by 1/std and by gamma use AP2(v) = sign(v) 2^round(log2|v|), so each is an exponent add.
/// `positions` as in make_spatial_batch_norm (1 after a dense layer).
std::unique_ptr<layer> make_shift_batch_norm(std::size_t channels, std::size_t positions = 1, float epsilon = 1e-4f,
                                             float momentum = 0.1f);
/// AP2(v) = sign(v) * 2^round(log2|v|) (0 stays 0): the power of two nearest v in log scale.
float ap2(float v) noexcept;
/// Batch normalization over `channels` channels of channel-last feature maps with `positions`
/// (height*width) positions per example: statistics per channel over the batch and all positions.
std::unique_ptr<layer> make_spatial_batch_norm(std::size_t channels, std::size_t positions, float epsilon = 1e-4f,
                                               float momentum = 0.1f);

/// Shape of a 2-D convolution. Feature maps are stored channel-last: value (y, x, c) of an example is
/// feature (y * width + x) * channels + c, so a convolution's output rows are also the rows of a
/// GEMM with one row per output position.
struct conv_shape {
  std::size_t height = 0, width = 0;  ///< input size
  std::size_t in_channels = 0, out_channels = 0;
  std::size_t kernel = 3;    ///< square kernel, stride 1
  bool same_padding = true;  ///< pad with zeros to keep height x width ("same"), else "valid"
  /// Area of a max-pool after the convolution that Lin et al.'s Glorot fan divides the fan-out by
  /// (network_architecture::fan_out_per_pool); 1 leaves the fan k^2 (in + out). Not stored in files.
  std::size_t fan_out_pool = 1;
  std::size_t out_height() const { return same_padding ? height : height + 1 - kernel; }
  std::size_t out_width() const { return same_padding ? width : width + 1 - kernel; }
};
/// Convolution without bias over channel-last maps (kernel odd with same padding, any size up to 15 with
/// valid padding), with fp32, binary or ternary weights
/// [out_channels][kernel][kernel][in_channels] (and quantized backprop) as in dense_options. Computed as
/// im2col followed by the dense layer's products, over slabs of examples to bound the scratch memory; binary
/// weights' forward pass (and with same padding their input gradient) as implicit GEMMs on the maps instead.
std::unique_ptr<layer> make_conv2d(const conv_shape& shape, const dense_options& options, std::uint64_t init_seed);
/// 2x2 max-pooling with stride 2 of channel-last maps (odd last rows/columns are dropped).
std::unique_ptr<layer> make_max_pool(std::size_t height, std::size_t width, std::size_t channels);
/// k-bit activation of QNNs (bits 2..8; 1 is make_sign): y = (2u - L)/L with L = 2^bits - 1 and
/// u = clamp(floor((x + 1)/2 * L + 1/2), 0, L), the nearest of 2^bits levels in [-1, 1] (with
/// `stochastic` in training: floor((x + 1)/2 * L + r), r uniform in [0, 1), unbiased inside [-1, 1]).
/// Backward is the straight-through estimator, as for sign.
std::unique_ptr<layer> make_quantized_activation(std::size_t features, int bits, bool stochastic = false);
/// Dropout: in training each value is zeroed with probability p (drawn from the run seed, the step
/// and the layer) and the kept ones are scaled by 1/(1-p); identity at inference.
std::unique_ptr<layer> make_dropout(std::size_t features, float p);
/// Sign activation of BNNs: +1 where x >= 0, else -1 (deterministic), or in training with
/// `stochastic` +1 with probability hard_sigmoid(x) = clip((x + 1) / 2, 0, 1). Backward is the
/// straight-through estimator: dx = dy where |x| <= 1, 0 elsewhere.
std::unique_ptr<layer> make_sign(std::size_t features, bool stochastic = false);
/// max(0, x).
std::unique_ptr<layer> make_relu(std::size_t features);
/// clamp(x, -1, 1); gradient passes where |x| <= 1.
std::unique_ptr<layer> make_hard_tanh(std::size_t features);

/// A feed-forward stack of layers with the activation buffers of one minibatch.
class network {
 public:
  network() = default;
  network(network&&) = default;
  network& operator=(network&&) = default;
  /// Appends a layer; its input size must equal the previous layer's output size.
  void add(std::unique_ptr<layer> l);
  std::size_t input_size() const;
  std::size_t output_size() const;
  const std::vector<std::unique_ptr<layer>>& layers() const { return layers_; }
  /// Runs the minibatch x through every layer; returns the last layer's output.
  const matrix& forward(const matrix& x, const step_context& ctx);
  /// Back-propagates dL/d(output) of the last forward pass, filling every parameter's gradient.
  void backward(const matrix& output_grad, const step_context& ctx);
  std::vector<parameter*> parameters();
  /// Copies of all parameter values and buffers (for keeping the best model).
  std::vector<std::vector<float>> snapshot();
  void restore(const std::vector<std::vector<float>>& state);
  /// Notifies layers that parameters changed.
  void parameters_changed();
  std::string describe() const;
  /// Operations of one training step on a minibatch. The engine computes no input gradient for the
  /// first layer; `with_first_input_gradient` counts one anyway, as Lin et al.'s figures do.
  op_counts training_ops(std::size_t batch, bool with_first_input_gradient = false) const;

 private:
  std::vector<std::unique_ptr<layer>> layers_;
  std::vector<matrix> activations_;     // activations_[i] = output of layer i (unused where absorbed)
  std::vector<std::uint8_t> absorbed_;  // absorbed_[i]: layer i - 1 applies layer i (absorb_next)
  const matrix* input_ = nullptr;
  matrix grad_a_, grad_b_;
};

}  // namespace fewmul
