// Convolution (im2col + the dense layer's weight products) and 2x2 max-pooling over channel-last maps.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"
#include "layers/layer_io.hpp"
#include "runtime/parallel_gemm.hpp"
#include "model/serialize.hpp"
#include "layers/weight_core.hpp"

namespace fewmul {
namespace {

using detail::check_width;
using detail::first_row;
using detail::fold_gradient;
using detail::parallel_rows;
using detail::parts_of;

// im2col scratch per slab of examples (floats); bounds memory for wide layers and big batches. The weight
// gradients that read the maps through an indirection buffer keep the same slabs: their sums (bits) are those of
// the explicit matrix.
constexpr std::size_t slab_budget = std::size_t{1} << 22;

void check_shape(const conv_shape& s) {
  const auto bad = [&](const std::string& why) {
    throw error("convolution " + std::to_string(s.height) + "x" + std::to_string(s.width) + "x" +
                std::to_string(s.in_channels) + "->" + std::to_string(s.out_channels) + " kernel " +
                std::to_string(s.kernel) + ": " + why);
  };
  if (s.height == 0 || s.width == 0 || s.in_channels == 0 || s.out_channels == 0) bad("sizes must be positive");
  if (s.height > 4096 || s.width > 4096 || s.in_channels > 65536 || s.out_channels > 65536) bad("implausibly large");
  // An even kernel has no centre to pad around; valid padding needs none (Lin et al.'s 2x2 kernels).
  if (s.kernel == 0 || s.kernel > 15) bad("kernel size must lie in 1..15");
  if (s.same_padding && s.kernel % 2 == 0) bad("kernel size must be odd with same padding");
  if (s.fan_out_pool == 0 || s.fan_out_pool > 64) bad("the pool area of the fan must lie in 1..64");
  if (!s.same_padding && (s.kernel > s.height || s.kernel > s.width)) bad("kernel larger than a valid-padded input");
}

// cols[p][k] for output position p = oy*out_width + ox and k = (ky*kernel + kx)*in_channels + c:
// the input value under kernel tap (ky, kx) at channel c, or 0 in the zero padding.
template <class T>
void im2col(const T* x, const conv_shape& s, T* cols) {
  const std::size_t c_in = s.in_channels, kernel = s.kernel, ho = s.out_height(), wo = s.out_width();
  const std::size_t k_size = kernel * kernel * c_in;
  const std::ptrdiff_t pad = s.same_padding ? static_cast<std::ptrdiff_t>((kernel - 1) / 2) : 0;
  for (std::size_t oy = 0; oy < ho; ++oy)
    for (std::size_t ox = 0; ox < wo; ++ox) {
      T* row = cols + (oy * wo + ox) * k_size;
      for (std::size_t ky = 0; ky < kernel; ++ky) {
        const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy + ky) - pad;
        T* tap_row = row + ky * kernel * c_in;
        if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(s.height)) {
          std::fill_n(tap_row, kernel * c_in, T{0});
          continue;
        }
        for (std::size_t kx = 0; kx < kernel; ++kx) {
          const std::ptrdiff_t ix = static_cast<std::ptrdiff_t>(ox + kx) - pad;
          T* tap = tap_row + kx * c_in;
          if (ix < 0 || ix >= static_cast<std::ptrdiff_t>(s.width))
            std::fill_n(tap, c_in, T{0});
          else
            std::copy_n(x + (static_cast<std::size_t>(iy) * s.width + static_cast<std::size_t>(ix)) * c_in, c_in, tap);
        }
      }
    }
}

// The adjoint of im2col: dx = sum over taps of dcols, in the fixed order of positions and taps.
void col2im(const float* dcols, const conv_shape& s, float* dx) {
  const std::size_t c_in = s.in_channels, kernel = s.kernel, ho = s.out_height(), wo = s.out_width();
  const std::size_t k_size = kernel * kernel * c_in;
  const std::ptrdiff_t pad = s.same_padding ? static_cast<std::ptrdiff_t>((kernel - 1) / 2) : 0;
  std::fill_n(dx, s.height * s.width * c_in, 0.0f);
  for (std::size_t oy = 0; oy < ho; ++oy)
    for (std::size_t ox = 0; ox < wo; ++ox) {
      const float* row = dcols + (oy * wo + ox) * k_size;
      for (std::size_t ky = 0; ky < kernel; ++ky) {
        const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy + ky) - pad;
        if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(s.height)) continue;
        for (std::size_t kx = 0; kx < kernel; ++kx) {
          const std::ptrdiff_t ix = static_cast<std::ptrdiff_t>(ox + kx) - pad;
          if (ix < 0 || ix >= static_cast<std::ptrdiff_t>(s.width)) continue;
          const float* tap = row + (ky * kernel + kx) * c_in;
          float* target = dx + (static_cast<std::size_t>(iy) * s.width + static_cast<std::size_t>(ix)) * c_in;
          for (std::size_t c = 0; c < c_in; ++c) target[c] += tap[c];
        }
      }
    }
}

class conv2d_layer final : public detail::serializable_layer {
 public:
  // `initialize` false: no weights yet (read() fills them, packed bits staying packed).
  conv2d_layer(const conv_shape& shape, const dense_options& options, std::uint64_t init_seed, bool initialize = true)
      : shape_((check_shape(shape), shape)),
        core_(shape.kernel * shape.kernel * shape.in_channels, shape.out_channels, options, init_seed,
              static_cast<float>(shape.kernel * shape.kernel) *
                  (static_cast<float>(shape.in_channels) +
                   static_cast<float>(shape.out_channels) / static_cast<float>(shape.fan_out_pool)),
              initialize) {
    if (shape.same_padding && shape.kernel > 1) describe_padding();
  }
  void set_input_bits(int inference_bits, int training_bits) override {
    core_.set_input_bits(inference_bits, training_bits);
    core_.invalidate();
  }

  std::string describe() const override {
    return "conv" + std::to_string(shape_.kernel) + "x" + std::to_string(shape_.kernel) + " " +
           std::to_string(shape_.height) + "x" + std::to_string(shape_.width) + "x" +
           std::to_string(shape_.in_channels) + "->" + std::to_string(shape_.out_channels) +
           (shape_.same_padding ? " same " : " valid ") + core_.kind_name();
  }
  std::size_t input_size() const override { return shape_.height * shape_.width * shape_.in_channels; }
  std::size_t output_size() const override { return positions() * shape_.out_channels; }
  std::vector<parameter*> parameters() override { return {&core_.weight()}; }
  void parameters_changed() override { core_.invalidate(); }

  op_counts training_ops(std::size_t batch, bool input_gradient) const override {
    op_counts c;
    const double rows = static_cast<double>(batch) * static_cast<double>(positions());
    core_.count_product(c, rows, false);
    if (input_gradient) core_.count_product(c, rows, false, true);
    core_.count_product(c, rows, true);
    return c;
  }

  void write(detail::byte_writer& out, bool packed) const override {
    out.put<std::uint32_t>(detail::tag_conv2d);
    out.put<std::uint64_t>(shape_.height);
    out.put<std::uint64_t>(shape_.width);
    out.put<std::uint64_t>(shape_.in_channels);
    out.put<std::uint64_t>(shape_.out_channels);
    out.put<std::uint64_t>(shape_.kernel);
    out.put<std::uint8_t>(shape_.same_padding);
    core_.write(out, packed);
  }

  static std::unique_ptr<layer> read(detail::byte_reader& in, bool packed) {
    conv_shape s;
    s.height = in.get<std::uint64_t>("convolution height");
    s.width = in.get<std::uint64_t>("convolution width");
    s.in_channels = in.get<std::uint64_t>("convolution input channels");
    s.out_channels = in.get<std::uint64_t>("convolution output channels");
    s.kernel = in.get<std::uint64_t>("convolution kernel");
    const auto padding = in.get<std::uint8_t>("convolution padding");
    if (padding > 1) in.invalid("unknown convolution padding");
    s.same_padding = padding != 0;
    try {
      check_shape(s);
    } catch (const error& e) {
      in.invalid(e.what());
    }
    const dense_options options = detail::weight_core::read_options(in);
    detail::weight_core::expect_payload(in, s.kernel * s.kernel * s.in_channels, s.out_channels, options, packed);
    auto l = std::make_unique<conv2d_layer>(s, options, 0, false);
    l->core_.read(in, packed);
    return l;
  }

  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_width(*this, x);
    core_.prepare(ctx, index);
    y.resize(x.rows, output_size());
    // Binary weights on float inputs: an implicit GEMM over the maps, no im2col.
    if (core_.forward_conv_binary(x.data.data(), x.rows, shape_, y.data.data(), ctx)) return;
    for_slabs(0, x.rows, [&](std::size_t, std::size_t b0, std::size_t n) {
      unfold(x, b0, n, ctx);
      core_.forward(cols_.data(), n * positions(), y.row(b0), ctx);
    });
  }

  // dW is summed slab by slab (slabs depend on the shapes only), so it is the same for any thread count;
  // with parts of the minibatch (collective.hpp), slab by slab within each part, then the parts in order.
  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    std::vector<float>& grad = core_.weight().grad;
    if (dx) dx->resize(x.rows, input_size());
    const std::size_t k_size = core_.inputs();
    const bool qbp = core_.options().qbp;
    const batch_split* split = parts_of(ctx);
    const std::size_t parts = split ? split->local_parts() : 1;
    float* partials = split ? split->gradient_partials(grad.data(), grad.size(), part_sums_) : nullptr;
    for (std::size_t i = 0; i < parts; ++i) {
      const std::size_t e0 = split ? split->bounds[i] : 0, e1 = split ? split->bounds[i + 1] : x.rows;
      float* sum = split ? partials + i * grad.size() : grad.data();
      for_slabs(e0, e1, [&](std::size_t slab, std::size_t b0, std::size_t n) {
        const std::size_t rows = n * positions();
        float* slab_grad = sum;
        if (slab > 0) {
          partial_.resize(grad.size());
          slab_grad = partial_.data();
        }
        // The weight gradient reads the input maps (QBP: their codes) through an indirection buffer, 8 bytes per
        // kernel tap instead of an im2col matrix of `channels` floats or codes: the same sums as on the explicit
        // matrix, slab by slab as before.
        if (qbp) {
          // QBP rounds the layer's input once (Lin et al.: x is quantized, then convolved), so every tap
          // reading a pixel sees the same code. Random index: the element's place in the whole minibatch's
          // input (whichever process holds it).
          map_codes_.resize(n * input_size());
          core_.quantize_inputs(x.row(b0), n * input_size(), map_codes_.data(), index, 0,
                                static_cast<std::uint32_t>((first_row(ctx) + b0) * input_size()), ctx);
          zero_codes_.assign(shape_.in_channels, 0);
          index_taps(map_codes_.data(), n, zero_codes_.data(), tap_codes_, ctx);
          core_.weight_gradient_codes_implicit(dy.row(b0), tap_codes_.data(), shape_.in_channels, rows, slab_grad,
                                               index, ctx);
        } else {
          zeros_.assign(shape_.in_channels, 0.0f);
          index_taps(x.row(b0), n, zeros_.data(), tap_rows_, ctx);
          core_.weight_gradient_implicit(dy.row(b0), tap_rows_.data(), shape_.in_channels, rows, slab_grad, ctx);
        }
        if (slab > 0) {
          parallel_rows(ctx.rt, grad.size(), 65536, [&](std::size_t i0, std::size_t i1) {
            for (std::size_t j = i0; j < i1; ++j) sum[j] += partial_[j];
          });
        }
        if (!dx || core_.input_gradient_conv_binary(dy.row(b0), n, shape_, dx->row(b0), ctx)) return;
        cols_.resize(rows * k_size);
        core_.input_gradient(dy.row(b0), rows, cols_.data(), ctx);
        parallel_rows(ctx.rt, n, 1, [&](std::size_t a0, std::size_t a1) {
          for (std::size_t e = a0; e < a1; ++e)
            col2im(cols_.data() + e * positions() * k_size, shape_, dx->row(b0 + e));
        });
      });
    }
    if (split) fold_gradient(ctx, *split, partials, grad.size(), grad.data());
  }

 private:
  std::size_t positions() const { return shape_.out_height() * shape_.out_width(); }

  // Tells the weights which im2col inputs of each output position are zero padding (one pattern per
  // border class: at most kernel^2 of them), so their XNOR forward on quantized inputs stays exact.
  void describe_padding() {
    std::vector<std::uint32_t> row_pattern;
    std::vector<std::vector<std::uint32_t>> padded_taps, padded;
    detail::conv_padding_patterns(shape_, row_pattern, padded_taps);
    const std::size_t c_in = shape_.in_channels;
    for (const auto& taps : padded_taps) {
      std::vector<std::uint32_t> inputs;
      for (std::uint32_t t : taps)
        for (std::size_t c = 0; c < c_in; ++c) inputs.push_back(static_cast<std::uint32_t>(t * c_in + c));
      padded.push_back(std::move(inputs));
    }
    core_.set_padding(std::move(row_pattern), std::move(padded));
  }

  // body(slab index, first example, examples) over the examples [first, end) in slabs.
  template <class Body>
  void for_slabs(std::size_t first, std::size_t end, Body&& body) const {
    const std::size_t per_example = positions() * core_.inputs();
    const std::size_t slab = std::max<std::size_t>(1, slab_budget / per_example);
    for (std::size_t b0 = first, s = 0; b0 < end; b0 += slab, ++s) body(s, b0, std::min(slab, end - b0));
  }

  void unfold(const matrix& x, std::size_t b0, std::size_t n, const step_context& ctx) {
    const std::size_t per_example = positions() * core_.inputs();
    cols_.resize(n * per_example);
    parallel_rows(ctx.rt, n, 1, [&](std::size_t e0, std::size_t e1) {
      for (std::size_t e = e0; e < e1; ++e) im2col(x.row(b0 + e), shape_, cols_.data() + e * per_example);
    });
  }

  // taps[(e * positions + p) * kernel^2 + tap]: the first channel of the input pixel under `tap` of output
  // position p of the example e of the `n` consecutive maps at `maps`, or `zeros` in the padding (im2col as an
  // indirection buffer). The geometry is the same for every example and slab: tap_offsets_, computed once.
  template <class T>
  void index_taps(const T* maps, std::size_t n, const T* zeros, std::vector<const T*>& taps_out,
                  const step_context& ctx) {
    const std::size_t per_example = positions() * shape_.kernel * shape_.kernel;
    if (tap_offsets_.empty()) {
      const std::size_t kernel = shape_.kernel, taps = kernel * kernel, wo = shape_.out_width();
      const std::ptrdiff_t pad = shape_.same_padding ? static_cast<std::ptrdiff_t>((kernel - 1) / 2) : 0;
      tap_offsets_.resize(per_example);
      for (std::size_t p = 0; p < positions(); ++p)
        for (std::size_t t = 0; t < taps; ++t) {
          const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(p / wo + t / kernel) - pad;
          const std::ptrdiff_t ix = static_cast<std::ptrdiff_t>(p % wo + t % kernel) - pad;
          const bool inside = iy >= 0 && iy < static_cast<std::ptrdiff_t>(shape_.height) && ix >= 0 &&
                              ix < static_cast<std::ptrdiff_t>(shape_.width);
          tap_offsets_[p * taps + t] =
              inside ? (static_cast<std::size_t>(iy) * shape_.width + static_cast<std::size_t>(ix)) * shape_.in_channels
                     : padding_tap;
        }
    }
    taps_out.resize(n * per_example);
    parallel_rows(ctx.rt, n, 1, [&](std::size_t e0, std::size_t e1) {
      for (std::size_t e = e0; e < e1; ++e) {
        const T* map = maps + e * input_size();
        const T** out = taps_out.data() + e * per_example;
        for (std::size_t i = 0; i < per_example; ++i)
          out[i] = tap_offsets_[i] == padding_tap ? zeros : map + tap_offsets_[i];
      }
    });
  }

  friend const detail::weight_core* detail::conv_weights(const layer& l, conv_shape& shape);
  conv_shape shape_;
  detail::weight_core core_;
  std::vector<float> cols_, partial_, zeros_;
  std::vector<const float*> tap_rows_;  // the slab's im2col as pointers (index_taps)
  static constexpr std::size_t padding_tap = SIZE_MAX;
  std::vector<std::size_t> tap_offsets_;             // [position][tap]: offset in a map, or padding_tap (index_taps)
  std::vector<float> part_sums_;                     // the weight gradients of this process's parts of the minibatch
  std::vector<std::int8_t> map_codes_, zero_codes_;  // QBP: the slab's input codes, the padding's
  std::vector<const std::int8_t*> tap_codes_;        // QBP: their im2col as pointers
};

class max_pool_layer final : public detail::serializable_layer {
 public:
  max_pool_layer(std::size_t height, std::size_t width, std::size_t channels) : h_(height), w_(width), c_(channels) {
    if (height < 2 || width < 2 || channels == 0 || height > 4096 || width > 4096 || channels > 65536)
      throw error("max-pooling needs maps of at least 2x2 with at least one channel (got " + std::to_string(height) +
                  "x" + std::to_string(width) + "x" + std::to_string(channels) + ")");
  }
  std::string describe() const override {
    return "maxpool2x2 " + std::to_string(h_) + "x" + std::to_string(w_) + "x" + std::to_string(c_);
  }
  std::size_t input_size() const override { return h_ * w_ * c_; }
  std::size_t output_size() const override { return (h_ / 2) * (w_ / 2) * c_; }
  op_counts training_ops(std::size_t, bool) const override { return {}; }  // comparisons only
  void write(detail::byte_writer& out, bool) const override {
    out.put<std::uint32_t>(detail::tag_max_pool);
    out.put<std::uint64_t>(h_);
    out.put<std::uint64_t>(w_);
    out.put<std::uint64_t>(c_);
  }

  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_width(*this, x);
    y.resize(x.rows, output_size());
    run(ctx, ctx.kernels.max_pool_forward, x, &y, nullptr, nullptr);
  }

  // The gradient goes to the window's first maximum, as recomputed from x (the kernel's contract). Every
  // element of dx is written once, in the parallel loop (no separate zero fill of dx).
  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    if (!dx) return;
    dx->resize(x.rows, input_size());
    run(ctx, ctx.kernels.max_pool_backward, x, nullptr, &dy, dx);
  }

 private:
  // One kernel call per block of examples (images are independent: any split gives the same bits).
  void run(const step_context& ctx, kernels::max_pool_fn pool, const matrix& x, matrix* y, const matrix* dy,
           matrix* dx) const {
    const std::size_t in = input_size(), out = output_size();
    parallel_rows(ctx.rt, x.rows, 4, [&](std::size_t b0, std::size_t b1) {
      kernels::max_pool_params p{.images = b1 - b0, .height = h_, .width = w_, .channels = c_};
      p.x = x.data.data() + b0 * in;
      if (y) p.y = y->data.data() + b0 * out;
      if (dy) p.dy = dy->data.data() + b0 * out;
      if (dx) p.dx = dx->data.data() + b0 * in;
      pool(p);
    });
  }

  friend bool detail::max_pool_shape(const layer& l, std::size_t& height, std::size_t& width, std::size_t& channels);
  std::size_t h_, w_, c_;
};

}  // namespace

std::unique_ptr<layer> make_conv2d(const conv_shape& shape, const dense_options& options, std::uint64_t init_seed) {
  return std::make_unique<conv2d_layer>(shape, options, init_seed);
}

std::unique_ptr<layer> make_max_pool(std::size_t height, std::size_t width, std::size_t channels) {
  return std::make_unique<max_pool_layer>(height, width, channels);
}

namespace detail {

std::unique_ptr<layer> read_conv2d(byte_reader& in, bool packed) { return conv2d_layer::read(in, packed); }

const weight_core* conv_weights(const layer& l, conv_shape& shape) {
  const auto* c = dynamic_cast<const conv2d_layer*>(&l);
  if (!c) return nullptr;
  shape = c->shape_;
  return &c->core_;
}

const weight_core* layer_weights(const layer& l) {
  conv_shape shape;
  const weight_core* core = dense_weights(l);
  return core ? core : conv_weights(l, shape);
}

bool max_pool_shape(const layer& l, std::size_t& height, std::size_t& width, std::size_t& channels) {
  const auto* p = dynamic_cast<const max_pool_layer*>(&l);
  if (!p) return false;
  height = p->h_;
  width = p->w_;
  channels = p->c_;
  return true;
}

void conv_im2col(const float* x, const conv_shape& shape, float* cols) { im2col(x, shape, cols); }

void conv_padding_patterns(const conv_shape& shape, std::vector<std::uint32_t>& row_pattern,
                           std::vector<std::vector<std::uint32_t>>& padded_taps) {
  const std::size_t kernel = shape.kernel, ho = shape.out_height(), wo = shape.out_width();
  const auto pad = shape.same_padding ? static_cast<std::ptrdiff_t>((kernel - 1) / 2) : 0;
  row_pattern.assign(ho * wo, 0);
  padded_taps.clear();
  std::vector<std::pair<std::ptrdiff_t, std::ptrdiff_t>> keys;  // (y class, x class) of each pattern
  auto border = [&](std::size_t o, std::size_t size) -> std::ptrdiff_t {
    const auto v = static_cast<std::ptrdiff_t>(o);
    if (v < pad) return v - pad;  // taps above/left are padding
    if (v + pad >= static_cast<std::ptrdiff_t>(size)) return v + pad + 1 - static_cast<std::ptrdiff_t>(size);
    return 0;
  };
  for (std::size_t oy = 0; oy < ho; ++oy)
    for (std::size_t ox = 0; ox < wo; ++ox) {
      const std::pair<std::ptrdiff_t, std::ptrdiff_t> key{border(oy, shape.height), border(ox, shape.width)};
      auto found = std::find(keys.begin(), keys.end(), key);
      if (found == keys.end()) {
        keys.push_back(key);
        std::vector<std::uint32_t> taps;
        for (std::size_t ky = 0; ky < kernel; ++ky)
          for (std::size_t kx = 0; kx < kernel; ++kx) {
            const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy + ky) - pad;
            const std::ptrdiff_t ix = static_cast<std::ptrdiff_t>(ox + kx) - pad;
            if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(shape.height) || ix < 0 ||
                ix >= static_cast<std::ptrdiff_t>(shape.width))
              taps.push_back(static_cast<std::uint32_t>(ky * kernel + kx));
          }
        padded_taps.push_back(std::move(taps));
        found = keys.end() - 1;
      }
      row_pattern[oy * wo + ox] = static_cast<std::uint32_t>(found - keys.begin());
    }
}

std::unique_ptr<layer> read_max_pool(byte_reader& in) {
  const auto h = in.get<std::uint64_t>("pool height");
  const auto w = in.get<std::uint64_t>("pool width");
  const auto c = in.get<std::uint64_t>("pool channels");
  if (h < 2 || w < 2 || c == 0 || h > 4096 || w > 4096 || c > 65536)
    in.invalid("implausible max-pool shape " + std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c));
  return make_max_pool(h, w, c);
}

}  // namespace detail
}  // namespace fewmul
