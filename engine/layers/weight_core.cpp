#include "layers/weight_core.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "fewmul/error.hpp"
#include "runtime/parallel_gemm.hpp"
#include "model/serialize.hpp"

namespace fewmul::detail {
namespace {

// Uniform in [-1, 1) from the counter hash, so initialization is the same on every platform.
float uniform_pm1(std::uint64_t key, std::uint32_t index) {
  return static_cast<float>(kernels::counter_hash(key, index) >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

// The pack kernels number elements from their first row; a key per row chunk keeps every weight's
// random stream distinct across chunks.
std::uint64_t key_for_rows(std::uint64_t key, std::size_t first_row) { return kernels::derive_key(key, first_row); }

// Fraction of zeros in up to 256 evenly spaced of `rows` rows, `width` values each, row_zeros(r) counting row r's:
// an estimate for choosing a loop order, never a result (both orders give the same bits).
template <class RowZeros>
double sampled_zero_fraction(std::size_t rows, std::size_t width, RowZeros&& row_zeros) {
  const std::size_t sampled = std::min<std::size_t>(rows, 256);
  if (sampled == 0 || width == 0) return 0.0;
  std::size_t zeros = 0;
  for (std::size_t s = 0; s < sampled; ++s) zeros += row_zeros(s * rows / sampled);
  return static_cast<double>(zeros) / static_cast<double>(sampled * width);
}
// ... of columns [c0, c1) of a row-major [rows][ld] matrix.
template <class T>
double sampled_zero_fraction(const T* x, std::size_t rows, std::size_t ld, std::size_t c0, std::size_t c1) {
  return sampled_zero_fraction(rows, c1 > c0 ? c1 - c0 : 0, [&](std::size_t r) {
    return static_cast<std::size_t>(std::count(x + r * ld + c0, x + r * ld + c1, T{0}));
  });
}
// ... of a weight gradient's `width` codes per row, strided (q, row stride q_cs) or through an indirection buffer
// (q_cs pointers per row, q_segment codes each).
double sampled_zero_fraction(const kernels::gemm_shift_params& codes, std::size_t rows, std::size_t width) {
  if (!codes.q_rows) return sampled_zero_fraction(codes.q, rows, codes.q_cs, 0, width);
  return sampled_zero_fraction(rows, width, [&](std::size_t r) {
    std::size_t zeros = 0;
    for (std::size_t g = 0; g < codes.q_cs; ++g) {
      const std::int8_t* run = codes.q_rows[r * codes.q_cs + g];
      zeros += static_cast<std::size_t>(std::count(run, run + codes.q_segment, std::int8_t{0}));
    }
    return zeros;
  });
}

}  // namespace

weight_core::weight_core(std::size_t inputs, std::size_t outputs, const dense_options& options, std::uint64_t init_seed,
                         float fan, bool initialize)
    : in_(inputs), out_(outputs), options_(options), traits_(&kind_traits(options.kind)) {
  if (inputs == 0 || outputs == 0) throw error("a weight layer needs positive sizes");
  if (inputs > (std::size_t{1} << 24) || outputs > (std::size_t{1} << 24) || inputs * outputs > (std::size_t{1} << 31))
    throw error("weight matrix of " + std::to_string(outputs) + "x" + std::to_string(inputs) + " is too large");
  if (options.qbp && options.qbp_round == qbp_rounding::authors_conv && options.qbp_kmax >= kernels::pow2_max_exponent)
    throw error("the authors' convolution rounding reaches 2^(kmax + 1): kmax must stay below " +
                std::to_string(kernels::pow2_max_exponent));
  if (options.qbp && (options.qbp_kmin < kernels::pow2_min_exponent || options.qbp_kmax > kernels::pow2_max_exponent ||
                      options.qbp_kmin > options.qbp_kmax))
    throw error("quantized-backprop exponent range [" + std::to_string(options.qbp_kmin) + ", " +
                std::to_string(options.qbp_kmax) + "] must lie within [" + std::to_string(kernels::pow2_min_exponent) +
                ", " + std::to_string(kernels::pow2_max_exponent) + "] with kmin <= kmax");
  if (traits_->check) traits_->check(options);
  weight_.name = "W";
  // Binary/ternary weights start after the paper of their method (dense_options::lr_scale). Lin et al.:
  // in units of BinaryConnect's clip value W0 = sqrt(1.5 / fan) = 1, uniform in [-2 W0, 2 W0]
  // (hantek/BinaryConnect layer.py, dense and conv layers alike: high = sqrt(6 / fan), W0 = high / 2,
  // W = uniform(-high, high)), so half the weights start saturated. The authors clip at the first
  // update (parameters_updates: T.clip(new_W, -W0, W0)); clipping here gives the same forward pass
  // (sign, hard_sigm(W / W0) and the ternary |W| / W0 all saturate at W0) and keeps E[W] in range. A
  // narrower start left a stochastic convnet's forward pass mostly noise (issue 15: CIFAR-10 bc-stoch,
  // width 0.25, 2 epochs: 83.6% -> 63.4%). BinaryNet: H = 1, uniform in [-1, 1]
  // (MatthieuCourbariaux/BinaryNet Train-time/mnist.py, cifar10.py: H = 1.; binary_net.py DenseLayer,
  // Conv2DLayer: W = lasagne.init.Uniform((-H, H))). fp32, and the older mode none: Glorot uniform.
  const bool binary_weights = traits_->sampled;
  const lr_scale_kind mode = binary_weights ? options_.lr_scale : lr_scale_kind::none;
  const float range = mode == lr_scale_kind::none             ? std::sqrt(6.0f / fan)
                      : mode == lr_scale_kind::binary_connect ? 2.0f
                                                              : 1.0f;
  const float limit = mode == lr_scale_kind::none ? range : 1.0f;
  const std::uint64_t key = kernels::derive_key(init_seed, 0x1a11);
  if (initialize) {
    weight_.value.resize(in_ * out_);
    weight_.grad.assign(in_ * out_, 0.0f);
    for (std::size_t i = 0; i < weight_.value.size(); ++i)
      weight_.value[i] = std::clamp(range * uniform_pm1(key, static_cast<std::uint32_t>(i)), -limit, limit);
  }
  if (binary_weights) {
    weight_.clip = 1.0f;
    // binary_net: binary_net.py clipping_scaling, param + W_LR_scale * (adam_update - param).
    if (mode == lr_scale_kind::binary_connect) weight_.lr_scale = fan / 1.5f;
    if (mode == lr_scale_kind::binary_net) weight_.lr_scale = std::sqrt(fan / 1.5f);
  }
}

// What the training step executes per product (the layer knows its input, so the first layer of a BNN
// counts differently from the hidden ones):
// * forward: fp32 a multiply-add; binary/ternary/k-bit weights on float inputs one masked add per weight
//   plane; on ±1 or k-bit inputs (BNN/QNN hidden layers) XNOR-popcount, one bit operation per bit pair
//   and plane pair, no arithmetic per product.
// * input gradient (`weight_gradient` false, counted by the caller only where it is computed): δ times
//   ±1 or k-bit weights, one masked add per weight plane (fp32: a multiply-add).
// * weight gradient: δ times the layer input: with quantized backprop a shift and an add; with ±1
//   inputs (BNN hidden layers) a sign flip and an add, counted as an addition; else a multiply-add (the
//   first layer's float pixels, k-bit inputs, fp32).
void weight_core::count_product(op_counts& c, double rows, bool weight_gradient, bool input_gradient) const {
  const double macs = rows * static_cast<double>(in_) * static_cast<double>(out_);
  const int input_bits = xnor_input_bits(true);
  if (weight_gradient) {
    if (options_.qbp)
      c.shifts += macs;
    else if (input_bits != 1)
      c.multiplications += macs;
    c.additions += macs;
    return;
  }
  const double planes = static_cast<double>(std::max(1, weight_planes()));
  if (input_gradient) {
    if (traits_->multiplies) c.multiplications += macs;
    c.additions += macs * planes;
    return;
  }
  if (input_bits > 0) {
    c.bit_operations += macs * planes * static_cast<double>(input_bits);
    return;
  }
  if (traits_->multiplies) c.multiplications += macs;
  c.additions += macs * planes;  // one masked add per plane
}

std::vector<std::uint64_t> weight_core::inference_planes() const {
  if (weight_.value.empty()) return loaded_planes_;
  const std::size_t words = kernels::words_for(in_), arrays = static_cast<std::size_t>(traits_->arrays(options_));
  std::vector<std::uint64_t> bits(arrays * out_ * words);
  if (arrays > 0)
    traits_->sample(kernels::reference_kernels(), {.w = weight_.value.data(),
                                                   .rows = out_,
                                                   .cols = in_,
                                                   .ld = in_,
                                                   .options = options_,
                                                   .mode = kernels::sample_mode::deterministic,
                                                   .key = 0,
                                                   .arrays = bits.data(),
                                                   .array_words = out_ * words,
                                                   .words = words});
  return bits;
}

// The float master weights of packed binary/k-bit weights read from a model: each the value of its level.
void weight_core::materialize() {
  if (!weight_.value.empty() || loaded_planes_.empty()) return;
  const std::size_t words = kernels::words_for(in_);
  std::vector<float>& w = weight_.value;
  w.resize(in_ * out_);
  for (std::size_t r = 0; r < out_; ++r)
    traits_->decode_row(loaded_planes_.data(), out_ * words, words, r, in_, options_, w.data() + r * in_);
  weight_.grad.assign(in_ * out_, 0.0f);
  std::vector<std::uint64_t>().swap(loaded_planes_);  // the floats are the weights now
}

// Samples the weights used by this step: stochastic weights are drawn anew every training step;
// deterministic weights only change when the parameters do.
void weight_core::prepare(const step_context& ctx, std::uint32_t layer, const std::size_t* process_rows) {
  use_expectation_ = !ctx.training && ctx.expected_weights && traits_->sampled &&
                     options_.training_sampling == kernels::sample_mode::stochastic;
  const bool stochastic = ctx.training && options_.training_sampling == kernels::sample_mode::stochastic;
  if (use_expectation_) {
    if (!expectation_ready_) transpose_master(ctx);
    expectation_ready_ = true;
    return;
  }
  if (!stochastic && inference_packed_) return;
  if (!ctx.training && weight_.value.empty() && !loaded_planes_.empty()) {  // packed model: no floats
    pack(ctx, kernels::sample_mode::deterministic, 0, true);
    inference_packed_ = true;
    return;
  }
  materialize();
  if (traits_->sampled) {
    const auto mode = stochastic ? kernels::sample_mode::stochastic : kernels::sample_mode::deterministic;
    pack(ctx, mode, kernels::derive_key(ctx.seed, ctx.step, layer, 0x5a3), false,
         ctx.training && ctx.split ? process_rows : nullptr);
  } else {
    // Training reads the master weights in place (gemm_f32 with b_transposed packs them per call anyway);
    // inference keeps a transposed copy, made once per parameter change, for its batch-1 path.
    if (ctx.training) return;
    transpose_master(ctx);
  }
  inference_packed_ = !stochastic;
}

// The kind's bit arrays of the weights (sampled as `mode` says, or a packed model's deterministic planes as
// read), their transposes, and for ±1 planes on quantized inputs the word-interleaved copy gemm_xnor reads.
void weight_core::pack(const step_context& ctx, kernels::sample_mode mode, std::uint64_t key, bool from_loaded,
                       const std::size_t* process_rows) {
  const std::size_t words_in = kernels::words_for(in_), words_out = kernels::words_for(out_);
  const std::size_t arrays = static_cast<std::size_t>(traits_->arrays(options_));
  const std::size_t plane = out_ * words_in, plane_t = in_ * words_out;
  bits_t_.resize(arrays * plane_t);
  if (from_loaded) {
    bits_ = loaded_planes_;
  } else {
    bits_.resize(arrays * plane);
    // Rows in chunks of 32 from row 0 (each chunk's random key names its first row), also within a process's rows.
    const int rank = process_rows ? ctx.split->comm->rank : 0;
    const std::size_t first = process_rows ? process_rows[rank] : 0,
                      last = process_rows ? process_rows[rank + 1] : out_;
    parallel_rows(ctx.rt, last - first, 32, [&](std::size_t c0, std::size_t c1) {
      const std::size_t r0 = first + c0;
      traits_->sample(ctx.kernels, {.w = weight_.value.data() + r0 * in_,
                                    .rows = c1 - c0,
                                    .cols = in_,
                                    .ld = in_,
                                    .options = options_,
                                    .mode = mode,
                                    .key = key_for_rows(key, r0),
                                    .arrays = bits_.data() + r0 * words_in,
                                    .array_words = plane,
                                    .words = words_in});
    });
    if (process_rows) {  // the other processes' rows, sampled by them from their up-to-date master weights
      const collective& comm = *ctx.split->comm;
      gather_offsets_.resize(static_cast<std::size_t>(comm.size) + 1);
      for (std::size_t r = 0; r < gather_offsets_.size(); ++r)
        gather_offsets_[r] = process_rows[r] * words_in * sizeof(std::uint64_t);
      for (std::size_t j = 0; j < arrays; ++j) {
        std::uint64_t* bits = bits_.data() + j * plane;
        const void* all = comm.gather_ranges(comm.context, bits + first * words_in, gather_offsets_.data(), bits);
        if (all != bits) std::memcpy(bits, all, plane * sizeof(std::uint64_t));
      }
    }
  }
  for (std::size_t j = 0; j < arrays; ++j) transpose(bits_.data() + j * plane, bits_t_.data() + j * plane_t, ctx);
  flipped_ready_ = false;
  if (!traits_->planes || (input_bits_[0] == 0 && input_bits_[1] == 0)) return;
  xnor_.set_weights(bits_.data(), arrays, out_, words_in, ctx);
}

void weight_core::forward(const float* a, std::size_t rows, float* y, const step_context& ctx) {
  const int bits = xnor_input_bits(ctx.training);
  if (bits > 0 && !use_expectation_)
    return xnor_.run({.a = a,
                      .rows = rows,
                      .inputs = in_,
                      .outputs = out_,
                      .input_bits = bits,
                      .planes = bits_.data(),
                      .weight_planes = weight_planes(),
                      .y = y},
                     ctx);
  // E[W] is a float matrix: the fp32 product over the transposed master weights.
  const bool in_place = !traits_->sampled && ctx.training;
  multiply(
      use_expectation_ ? kind_traits(weight_kind::fp32) : *traits_, a, rows, in_, out_,
      {in_place ? weight_.value.data() : transposed_.data(), in_place, bits_t_.data(), in_ * kernels::words_for(out_)},
      y, ctx);
}

// conv_binary over every output position of `images` same-size maps x [height][width][channels] with the sign
// kernel `sign` ([kernel^2 channels][ldb words] of n bits), in chunks of positions, a few per thread (a chunk
// rebuilds the tables of the kernel - 1 input rows it shares with its neighbour); whichever chunk computes a
// position, its sum is the same.
void weight_core::run_conv_binary(const float* x, std::size_t images, const conv_shape& s, std::size_t channels,
                                  const std::uint64_t* sign, std::size_t n, float* out, const step_context& ctx) {
  const std::size_t positions = images * s.out_height() * s.out_width();
  const auto threads = static_cast<std::size_t>(std::max(1, ctx.rt.threads()));
  const std::size_t chunk = std::max<std::size_t>(96, (positions / (4 * threads) + 11) / 12 * 12);
  parallel_rows(ctx.rt, positions, chunk, [&](std::size_t p0, std::size_t p1) {
    run_packed_gemm(ctx.kernels, ctx.kernels.conv_binary,
                    {.x = x,
                     .images = images,
                     .height = s.height,
                     .width = s.width,
                     .channels = channels,
                     .kernel = s.kernel,
                     .same_padding = s.same_padding,
                     .p0 = p0,
                     .rows = p1 - p0,
                     .n = n,
                     .sign = sign,
                     .ldb = kernels::words_for(n),
                     .c = out + p0 * n,
                     .ldc = n});
  });
}

bool weight_core::forward_conv_binary(const float* x, std::size_t images, const conv_shape& s, float* y,
                                      const step_context& ctx) {
  // conv_binary reads one ±1 plane: binary weights.
  if (weight_planes() != 1 || use_expectation_ || xnor_input_bits(ctx.training) > 0) return false;
  if (!kernels::conv_binary_fits(s.width, s.in_channels, s.kernel, gemm_caches())) return false;
  run_conv_binary(x, images, s, s.in_channels, bits_t_.data(), out_, y, ctx);
  return true;
}

// dx of a same-padded, stride-1 convolution: dx[y][x][c] = sum over taps (ky, kx) and outputs o of
// dy[y + kernel/2 - ky][x + kernel/2 - kx][o] W[o][ky][kx][c] (zero outside the map), i.e. the same-padded
// convolution of dy with W'[(kernel-1-ky) kernel + (kernel-1-kx)][o] as its im2col weights for output channel c.
bool weight_core::input_gradient_conv_binary(const float* dy, std::size_t images, const conv_shape& s, float* dx,
                                             const step_context& ctx) {
  if (weight_planes() != 1 || use_expectation_ || !s.same_padding) return false;
  if (!kernels::conv_binary_fits(s.width, out_, s.kernel, gemm_caches())) return false;  // also out_ % 4 == 0
  const std::size_t taps = s.kernel * s.kernel, channels = s.in_channels, words = kernels::words_for(channels);
  const std::size_t words_in = kernels::words_for(in_);
  if (!flipped_ready_) {
    flipped_.resize(taps * out_ * words);
    parallel_rows(ctx.rt, out_, 16, [&](std::size_t o0, std::size_t o1) {
      for (std::size_t o = o0; o < o1; ++o)
        for (std::size_t t = 0; t < taps; ++t) {
          // Row (t, o) of W' is bits [(taps-1-t) channels, +channels) of W's row o.
          const std::uint64_t* from = bits_.data() + o * words_in;
          std::uint64_t* to = flipped_.data() + (t * out_ + o) * words;
          const std::size_t first = (taps - 1 - t) * channels;
          for (std::size_t w = 0; w < words; ++w) {
            const std::size_t bit = first + 64 * w, shift = bit % 64, word = bit / 64;
            std::uint64_t v = from[word] >> shift;
            if (shift != 0 && word + 1 < words_in) v |= from[word + 1] << (64 - shift);
            const std::size_t valid = std::min<std::size_t>(64, channels - 64 * w);
            to[w] = valid == 64 ? v : v & ((std::uint64_t{1} << valid) - 1);
          }
        }
    });
    flipped_ready_ = true;
  }
  run_conv_binary(dy, images, s, out_, flipped_.data(), channels, dx, ctx);
  return true;
}

void weight_core::input_gradient(const float* dy, std::size_t rows, float* dx, const step_context& ctx) {
  materialize();
  multiply(*traits_, dy, rows, out_, in_, {weight_.value.data(), false, bits_.data(), out_ * kernels::words_for(in_)},
           dx, ctx);
}

// dW[o][i] = sum_r dy[r][o] * x[r][i]: A(m=o, k=r) = dy[r*out + o].
void weight_core::weight_gradient(const float* dy, const float* x, std::size_t rows, float* grad, std::uint32_t layer,
                                  std::uint64_t part, const step_context& ctx, output_range outputs) {
  materialize();
  if (!options_.qbp) return float_weight_gradient(dy, rows, {.b = x, .ldb = in_}, grad, ctx, outputs);
  codes_.resize(rows * in_);
  quantize_inputs(x, rows * in_, codes_.data(), layer, part, 0, ctx);
  weight_gradient_codes(dy, codes_.data(), rows, grad, layer, ctx, outputs);
}

void weight_core::weight_gradient_implicit(const float* dy, const float* const* x_rows, std::size_t segment,
                                           std::size_t rows, float* grad, const step_context& ctx) {
  materialize();
  float_weight_gradient(dy, rows, {.ldb = in_ / segment, .b_rows = x_rows, .b_segment = segment}, grad, ctx, {});
}

void weight_core::float_weight_gradient(const float* dy, std::size_t rows, const kernels::gemm_f32_params& operand,
                                        float* grad, const step_context& ctx, output_range outputs) {
  const auto& k = ctx.kernels;
  const std::size_t o0 = outputs.begin, o1 = std::min(outputs.end, out_);
  // A layer followed by 2x2 max-pooling gets three zeros in four of its output gradient: their steps are
  // skipped (the same sums, see skip_zero_a), 1.5x faster there; at half zeros both modes cost the same
  // (bench gemm_f32_weight_gradient). The zeros are counted in a sample of rows (counting all of dy was 2% of
  // a convnet bc step in perf).
  const bool skip_zeros = sampled_zero_fraction(dy, rows, out_, o0, o1) >= 5.0 / 8.0;
  parallel_gemm(ctx.rt, o1 - o0, in_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    kernels::gemm_f32_params p = operand;
    if (p.b_rows)
      p.b_column = j0;
    else
      p.b += j0;
    p.m = i1 - i0;
    p.n = j1 - j0;
    p.k = rows;
    p.a = dy + o0 + i0;
    p.a_rs = 1;
    p.a_cs = out_;
    p.skip_zero_a = skip_zeros;
    p.c = grad + (o0 + i0) * in_ + j0;
    p.ldc = in_;
    run_packed_gemm(k, k.gemm_f32, p);
  });
}

void weight_core::weight_gradient_pm1(const float* dy, const float* x, std::size_t rows, float* grad,
                                      const step_context& ctx, output_range outputs) {
  const auto& k = ctx.kernels;
  const std::size_t o0 = outputs.begin, o1 = std::min(outputs.end, out_);
  const std::size_t words = kernels::words_for(in_);
  input_sign_.resize(rows * words);
  parallel_rows(ctx.rt, rows, 64, [&](std::size_t r0, std::size_t r1) {
    k.pack_binary(x + r0 * in_, r1 - r0, in_, in_, input_sign_.data() + r0 * words, words,
                  kernels::sample_mode::deterministic, 0);
  });
  // grad[o][i] = sum_r dy[r][o] * x[r][i]: A(m=o, k=r) = dy[r*out + o], B = the sign bits [r][i].
  parallel_gemm(ctx.rt, o1 - o0, in_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    run_packed_gemm(k, k.gemm_binary,
                    {.m = i1 - i0,
                     .n = j1 - j0,
                     .k = rows,
                     .a = dy + o0 + i0,
                     .a_rs = 1,
                     .a_cs = out_,
                     .bits = input_sign_.data() + j0 / 64,
                     .ldb = words,
                     .c = grad + (o0 + i0) * in_ + j0,
                     .ldc = in_});
  });
}

void weight_core::quantize_inputs(const float* x, std::size_t count, std::int8_t* codes, std::uint32_t layer,
                                  std::uint64_t part, std::uint32_t index0, const step_context& ctx) const {
  const std::uint64_t key = kernels::derive_key(ctx.seed, ctx.step, layer, part == 0 ? 0x9b9 : 0x9b9 + (part << 12));
  // The authors' rules (qbp_rounding) through the same kernel: dense, the engine's whole exponent range;
  // convolutions, the range [kmin, kmax + 1] (a floor clipped to kmax still steps up to kmax + 1), then
  // every |x| below 2^kmin, which the kernel sends to 0 or 2^kmin, set to sign(x) 2^kmin (zeros negative).
  const qbp_rounding rule = options_.qbp_round;
  const int kmin = rule == qbp_rounding::authors_dense ? kernels::pow2_min_exponent : options_.qbp_kmin;
  const int kmax = rule == qbp_rounding::authors_dense  ? kernels::pow2_max_exponent
                   : rule == qbp_rounding::authors_conv ? options_.qbp_kmax + 1
                                                        : options_.qbp_kmax;
  parallel_rows(ctx.rt, count, 4096, [&](std::size_t i0, std::size_t i1) {
    ctx.kernels.quantize_pow2(x + i0, i1 - i0, codes + i0, kmin, kmax, key, static_cast<std::uint32_t>(index0 + i0));
    if (rule != qbp_rounding::authors_conv) return;
    const float smallest = std::ldexp(1.0f, kmin);
    const auto code = static_cast<std::int8_t>(kmin + kernels::pow2_code_bias);
    for (std::size_t i = i0; i < i1; ++i)
      if (std::fabs(x[i]) < smallest) codes[i] = x[i] > 0.0f ? code : static_cast<std::int8_t>(-code);
  });
}

void weight_core::weight_gradient_codes(const float* dy, const std::int8_t* codes, std::size_t rows, float* grad,
                                        std::uint32_t layer, const step_context& ctx, output_range outputs) {
  shift_weight_gradient(dy, rows, {.q = codes, .q_rs = 1, .q_cs = in_}, grad, layer, ctx, outputs);
}

void weight_core::weight_gradient_codes_implicit(const float* dy, const std::int8_t* const* code_rows,
                                                 std::size_t segment, std::size_t rows, float* grad,
                                                 std::uint32_t layer, const step_context& ctx) {
  const std::size_t per_row = in_ / segment;
  shift_weight_gradient(dy, rows, {.q_cs = per_row, .q_rows = code_rows, .q_segment = segment}, grad, layer, ctx, {});
}

void weight_core::shift_weight_gradient(const float* dy, std::size_t rows, const kernels::gemm_shift_params& codes,
                                        float* grad, std::uint32_t layer, const step_context& ctx,
                                        output_range outputs) {
  const auto& k = ctx.kernels;
  const std::size_t o0 = outputs.begin, o1 = std::min(outputs.end, out_);
  // Computed as grad^T[i][o] = sum_r code(x[r][i]) * dy[r][o] and written through strides into grad[o][i].
  // The kernel's loop runs over the nonzeros of one operand, listed once per K block and reused by every
  // panel of the other (same bits either way). Listing dy pays a mask per product for the zero codes; listing
  // the codes pays a zero test per product only where dy holds zeros, and fewer products per list entry
  // (bench gemm_shift_weight_gradient, AMD EPYC Zen 5: dense dy with half-zero codes 1.5-1.7x faster listing
  // the codes; dy a quarter zero about even; dy 3/4 zero, as before a max-pool, 2.2-2.8x faster listing dy).
  // So: the codes when in_ <= out_ (MLP hidden layers), or when their nonzeros, weighted 4/3 if dy holds
  // zeros, are fewer than dy's; dy for outputs narrower than the codes mode's panels (the MLP's 10 outputs).
  // The kernel also conditions dy as it packs it (values too small to matter count as zero, and it reports
  // anything non-finite or huge), so there is no separate pass over dy.
  bool list_dy = out_ < in_;
  if (list_dy && o1 - o0 >= 32) {
    // The codes' zeros are sampled only here: most calls (in_ <= out_) never need them.
    const double dy_nonzero = 1.0 - sampled_zero_fraction(dy, rows, out_, o0, o1);
    const double code_nonzero = 1.0 - sampled_zero_fraction(codes, rows, in_);
    list_dy = dy_nonzero < code_nonzero * (dy_nonzero < 1.0 ? 4.0 / 3.0 : 1.0);
  }
  std::atomic<bool> out_of_range{false};
  parallel_gemm(ctx.rt, in_, o1 - o0, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    bool block_out_of_range = false;
    kernels::gemm_shift_params p = codes;
    if (p.q_rows)
      p.q_column = i0;
    else
      p.q += i0;
    p.m = i1 - i0;
    p.n = j1 - j0;
    p.k = rows;
    p.b = dy + o0 + j0;
    p.ldb = out_;
    p.c = grad + (o0 + j0) * in_ + i0;
    p.c_rs = 1;
    p.c_cs = in_;
    p.list_b = list_dy;
    p.b_out_of_range = &block_out_of_range;
    run_packed_gemm(k, k.gemm_shift, p);
    if (block_out_of_range) out_of_range.store(true);
  });
  if (out_of_range.load()) throw_exploding_gradient(layer, ctx);
}

// out[rows x width] = a[rows x depth] · w on the kernel of `kind`, split over the fixed block grid of
// parallel_gemm.
void weight_core::multiply(const weight_kind_traits& kind, const float* a, std::size_t rows, std::size_t depth,
                           std::size_t width, const weight_view& w, float* out, const step_context& ctx) {
  const int planes = kind.planes ? kind.arrays(options_) : 0;
  if (planes > 1) plane_out_.resize(rows * width);
  parallel_gemm(
      ctx.rt, rows, width,
      [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
        kind.multiply(ctx.kernels, {.a = a,
                                    .depth = depth,
                                    .width = width,
                                    .w = w,
                                    .planes = planes,
                                    .out = out,
                                    .scratch = plane_out_.data(),
                                    .i0 = i0,
                                    .i1 = i1,
                                    .j0 = j0,
                                    .j1 = j1});
      },
      kind.multiplies ? gemm_split::columns : gemm_split::rows);
}

// In 32 x 32 tiles, so that both the rows read and the rows written stay in L1 (a row-at-a-time transpose
// misses the cache on every element of one side: it was 20% of an fp32 step when it ran every step).
void weight_core::transpose_master(const step_context& ctx) {
  transposed_.resize(in_ * out_);
  constexpr std::size_t tile = 32;
  const float* w = weight_.value.data();
  float* t = transposed_.data();
  parallel_rows(ctx.rt, in_, 64, [&](std::size_t r0, std::size_t r1) {
    for (std::size_t o0 = 0; o0 < out_; o0 += tile)
      for (std::size_t i0 = r0; i0 < r1; i0 += tile)
        for (std::size_t i = i0; i < std::min(r1, i0 + tile); ++i)
          for (std::size_t o = o0; o < std::min(out_, o0 + tile); ++o) t[i * out_ + o] = w[o * in_ + i];
  });
}

// Transposes [out][in] bits into [in][out] bits in 64-row stripes of the output.
void weight_core::transpose(const std::uint64_t* rows_o, std::uint64_t* rows_i, const step_context& ctx) const {
  const std::size_t words_in = kernels::words_for(in_), words_out = kernels::words_for(out_);
  parallel_rows(ctx.rt, out_, 64, [&](std::size_t o0, std::size_t o1) {
    // Output words o0/64 of every row i: input rows o0..o1 transposed.
    kernels::transpose_bits(rows_o + o0 * words_in, o1 - o0, in_, words_in, rows_i + o0 / 64, words_out);
  });
}

void weight_core::throw_exploding_gradient(std::uint32_t layer, const step_context& ctx) const {
  throw error("non-finite or exploding gradient at layer " + std::to_string(layer) + " (" + kind_name() +
              " weights) in step " + std::to_string(ctx.step));
}

}  // namespace fewmul::detail
