#pragma once
// What the layer sources share: file tags, the input check, and readers of the layers defined
// outside layers.cpp.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"
#include "runtime/parallel_gemm.hpp"

namespace fewmul::detail {

class byte_writer;
class byte_reader;

/// The engine's layers: those model and checkpoint files can hold (a layer a user derives from
/// fewmul::layer is not one, and writing a network that holds it throws).
class serializable_layer : public layer {
 public:
  /// Appends the layer's tag, configuration and parameters to a model (`packed`: deterministic
  /// 1/2-bit weights for inference) or checkpoint (master weights) payload.
  virtual void write(byte_writer& out, bool packed) const = 0;
  /// Offered the layer network::add appends after this one: true when this layer applies it itself, its
  /// forward pass then writing `next`'s output and its backward pass taking the gradient of `next`'s output.
  /// network::forward and backward skip `next`, which stays in the network, its listing and its files.
  virtual bool absorb_next(const serializable_layer& /*next*/) { return false; }
  /// True for ReLU (which batch norm absorbs).
  virtual bool is_relu() const { return false; }
};
/// Serializes every layer of `net` / rebuilds a network from such a payload (engine/model/network.cpp).
void write_network(const network& net, byte_writer& out, bool packed);
network read_network(byte_reader& in, bool packed);

enum layer_tag : std::uint32_t {
  tag_dense = 1,
  tag_batch_norm = 2,
  tag_relu = 3,
  tag_hard_tanh = 4,
  tag_conv2d = 5,
  tag_max_pool = 6,
  tag_batch_norm_spatial = 7,
  tag_sign = 8,
  tag_quantized_activation = 9,
  tag_dropout = 10,
  tag_shift_batch_norm = 11,
};

/// One row of the layer-type table: a tag model files hold, a name for messages, and the reader, which
/// validates what it reads. Adding a layer type is its class, one tag and one row.
struct layer_type {
  layer_tag tag;
  std::string_view name;
  std::unique_ptr<layer> (*read)(byte_reader& in, bool packed);
};
/// Every layer type a model or checkpoint may hold (layers.cpp).
const std::vector<layer_type>& layer_types();

/// Throws fewmul::error unless x has the layer's input width.
inline void check_width(const layer& l, const matrix& x) {
  if (x.cols != l.input_size())
    throw error("layer " + std::to_string(l.index) + " (" + l.describe() + ") got inputs of width " +
                std::to_string(x.cols) + ", expected " + std::to_string(l.input_size()));
}

std::unique_ptr<layer> read_conv2d(byte_reader& in, bool packed);

/// The row of the whole minibatch that x's row 0 is (counters of random draws are numbered by it).
inline std::size_t first_row(const step_context& ctx) { return ctx.split ? ctx.split->first_row : 0; }
/// The process's split when its rows are not the whole minibatch summed as one part, else nullptr.
inline const batch_split* parts_of(const step_context& ctx) {
  return ctx.split && !ctx.split->whole() ? ctx.split : nullptr;
}
/// out = the left fold in part order of this process's parts' partials (part-major, `count` floats each) and
/// those of the other processes (collective.hpp). One process alone folds on the runtime's threads, with the
/// same additions.
inline void fold_parts(const step_context& ctx, const batch_split& split, const float* partials, std::size_t count,
                       float* out) {
  if (split.comm->size > 1) return split.fold(partials, count, out);
  const std::size_t parts = split.local_parts();
  parallel_rows(ctx.rt, count, 16384, [partials, parts, count, out](std::size_t i0, std::size_t i1) {
    for (std::size_t i = i0; i < i1; ++i) {
      float sum = partials[i];
      for (std::size_t p = 1; p < parts; ++p) sum += partials[p * count + i];
      out[i] = sum;
    }
  });
}
/// A weight gradient's fold: grad = the fold of the partials gradient_partials gave, unless it left the fold to
/// the optimizer (which then adds the parts in the same order in its update pass: the same bits).
inline void fold_gradient(const step_context& ctx, const batch_split& split, const float* partials, std::size_t count,
                          float* grad) {
  if (!split.fold_deferred(grad)) fold_parts(ctx, split, partials, count, grad);
}
/// A sum over the minibatch of `count` floats into out (collective.hpp): sum_part(r0, r1, part, partial)
/// writes the sum over local rows [r0, r1) of global part `part` to partial; the parts' partials are then
/// folded in part order with the other processes'. Without parts: one call over all rows, into out.
template <class SumPart>
void sum_over_parts(const step_context& ctx, std::size_t rows, std::size_t count, std::vector<float>& scratch,
                    float* out, SumPart&& sum_part) {
  const batch_split* split = parts_of(ctx);
  if (!split) {
    sum_part(std::size_t{0}, rows, std::uint64_t{0}, out);
    return;
  }
  const std::size_t parts = split->local_parts();
  float* partials = split->partials_for_fold(count, scratch);
  for (std::size_t i = 0; i < parts; ++i)
    sum_part(split->bounds[i], split->bounds[i + 1], std::uint64_t{split->first_part + i}, partials + i * count);
  fold_parts(ctx, *split, partials, count, out);
}

class weight_core;
/// What inference compilers (packed_network) read of the layers defined in layers.cpp.
struct batch_norm_view {
  std::size_t channels = 0, positions = 0;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  const float* mean = nullptr;
  const float* inv_std = nullptr;  ///< 1/sqrt(running variance + epsilon), AP2-rounded when shift-based
  const float* var = nullptr;      ///< the variance inv_std derives from
  bool shift = false;              ///< gamma is used as AP2(gamma)
  /// The layer's inference output for value x of channel f, computed exactly as its forward pass does.
  float apply(std::size_t f, float x) const;
};
/// The weights of a dense layer, or nullptr for any other layer.
const weight_core* dense_weights(const layer& l);
/// The running statistics of a batch-norm layer (refreshed on each call), or false for any other layer.
/// `expected`: the statistics inference with E[Wb] uses instead (the running ones when it has none).
bool batch_norm_inference_view(const layer& l, batch_norm_view& view, bool expected = false);
/// Channels, positions per example and kind of a batch-norm layer, or false for any other layer.
bool batch_norm_shape(const layer& l, std::size_t& channels, std::size_t& positions, bool& shift);
/// Sets a batch-norm layer's inference statistics (one value per channel): its running statistics, which
/// deterministic inference and model files use, or with `expected` the separate statistics used at
/// inference with E[Wb] (step_context::expected_weights). Throws fewmul::error for any other layer.
void set_batch_norm_statistics(layer& l, std::vector<float> mean, std::vector<float> var, bool expected);
/// Drops the E[Wb] statistics of a batch-norm layer (E[Wb] inference then uses the running ones).
void clear_expected_batch_norm_statistics(layer& l);
/// Bits of a sign (1) or k-bit activation layer, 0 for any other layer.
int activation_bits(const layer& l);
/// True for dropout layers (the identity at inference).
bool is_dropout(const layer& l);
std::unique_ptr<layer> read_max_pool(byte_reader& in);
/// The weights of a dense layer or a convolution, or nullptr for any other layer.
const weight_core* layer_weights(const layer& l);
/// The weights and shape of a convolution, or nullptr for any other layer.
const weight_core* conv_weights(const layer& l, conv_shape& shape);
/// The input map of a 2x2 max-pooling layer, or false for any other layer.
bool max_pool_shape(const layer& l, std::size_t& height, std::size_t& width, std::size_t& channels);
/// The convolution's im2col of one channel-last example: cols[p][k], p = oy * out_width + ox,
/// k = (ky * kernel + kx) * in_channels + c, 0 in the zero padding.
void conv_im2col(const float* x, const conv_shape& shape, float* cols);
/// Border class of each output position of a same-padded convolution and, per class, the taps
/// (ky * kernel + kx) it pads: at most kernel^2 classes. Valid padding: one class with no taps.
void conv_padding_patterns(const conv_shape& shape, std::vector<std::uint32_t>& row_pattern,
                           std::vector<std::vector<std::uint32_t>>& padded_taps);

}  // namespace fewmul::detail
