#include "layers/weight_core.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
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

}  // namespace

void binary_planes_block(const kernels::kernel_table& k, int planes, const float* a, std::size_t depth,
                         const std::uint64_t* planes_t, std::size_t plane_words, std::size_t width, float* out,
                         float* scratch, std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
  const std::size_t ldb = kernels::words_for(width);
  for (int j = planes - 1; j >= 0; --j) {
    run_packed_gemm(k, k.gemm_binary,
                    {.m = i1 - i0,
                     .n = j1 - j0,
                     .k = depth,
                     .a = a + i0 * depth,
                     .a_rs = depth,
                     .a_cs = 1,
                     .bits = planes_t + static_cast<std::size_t>(j) * plane_words + j0 / 64,
                     .ldb = ldb,
                     .c = (j == planes - 1 ? out : scratch) + i0 * width + j0,
                     .ldc = width});
    if (j == planes - 1) continue;
    // Horner: out = 2 * out + plane_j, exact doublings.
    for (std::size_t i = i0; i < i1; ++i)
      for (std::size_t q = j0; q < j1; ++q) out[i * width + q] = 2.0f * out[i * width + q] + scratch[i * width + q];
  }
  if (planes == 1) return;
  const float inverse_levels = 1.0f / static_cast<float>((1 << planes) - 1);
  for (std::size_t i = i0; i < i1; ++i)
    for (std::size_t q = j0; q < j1; ++q) out[i * width + q] *= inverse_levels;
}

void interleave_plane_words(const std::uint64_t* planes, std::size_t outputs, std::size_t words, std::size_t p0,
                            std::size_t p1, std::uint64_t* bt) noexcept {
  for (std::size_t p = p0; p < p1; ++p) {
    const std::size_t j = p / words, w = p % words;
    for (std::size_t o = 0; o < outputs; ++o) bt[p * outputs + o] = planes[(j * outputs + o) * words + w];
  }
}

weight_core::weight_core(std::size_t inputs, std::size_t outputs, const dense_options& options, std::uint64_t init_seed,
                         float fan, bool initialize)
    : in_(inputs), out_(outputs), options_(options) {
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
  if (options.kind == weight_kind::quantized) {
    if (options.weight_bits < 2 || options.weight_bits > 8)
      throw error("k-bit weights need 2 to 8 bits, not " + std::to_string(options.weight_bits));
    if (options.training_sampling != kernels::sample_mode::deterministic)
      throw error("k-bit weights are rounded deterministically");
  }
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
  const bool binary_weights = options_.kind != weight_kind::fp32;
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

std::string weight_core::kind_name() const {
  const dense_options& o = options_;
  if (o.kind == weight_kind::quantized) return std::to_string(o.weight_bits) + "-bit" + (o.qbp ? "+qbp" : "");
  std::string s = o.kind == weight_kind::fp32 ? "fp32" : o.kind == weight_kind::binary ? "binary" : "ternary";
  if (o.kind != weight_kind::fp32)
    s += o.training_sampling == kernels::sample_mode::stochastic ? "(stochastic)" : "(deterministic)";
  if (o.qbp && o.qbp_round == qbp_rounding::authors_dense) return s + "+qbp[authors' dense, unclipped]";
  if (o.qbp && o.qbp_round == qbp_rounding::authors_conv)
    return s + "+qbp[authors' conv, " + std::to_string(o.qbp_kmin) + "," + std::to_string(o.qbp_kmax + 1) + "]";
  if (o.qbp) s += "+qbp[" + std::to_string(o.qbp_kmin) + "," + std::to_string(o.qbp_kmax) + "]";
  return s;
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
    if (options_.kind == weight_kind::fp32) c.multiplications += macs;
    c.additions += macs * planes;
    return;
  }
  if (input_bits > 0) {
    c.bit_operations += macs * planes * static_cast<double>(input_bits);
    return;
  }
  if (options_.kind == weight_kind::fp32) c.multiplications += macs;
  c.additions += macs * planes;  // one masked add per plane
}

int weight_core::weight_planes() const {
  return options_.kind == weight_kind::binary ? 1 : options_.kind == weight_kind::quantized ? options_.weight_bits : 0;
}

std::vector<std::uint64_t> weight_core::inference_planes() const {
  if (weight_.value.empty()) return loaded_planes_;
  const std::size_t words = kernels::words_for(in_);
  std::vector<std::uint64_t> planes(static_cast<std::size_t>(std::max(1, weight_planes())) * out_ * words);
  if (options_.kind == weight_kind::binary)
    kernels::reference_kernels().pack_binary(weight_.value.data(), out_, in_, in_, planes.data(), words,
                                             kernels::sample_mode::deterministic, 0);
  else if (options_.kind == weight_kind::quantized)
    kernels::pack_levels(weight_.value.data(), out_, in_, in_, options_.weight_bits, planes.data(), out_ * words,
                         words);
  return planes;
}

void weight_core::write(byte_writer& out, bool packed) const {
  out.put<std::uint8_t>(static_cast<std::uint8_t>(options_.kind));
  const bool as_bits = packed && options_.kind != weight_kind::fp32;
  // A packed model is an inference model: deterministic weights, no quantized backprop.
  out.put<std::uint8_t>(as_bits ? 0 : static_cast<std::uint8_t>(options_.training_sampling));
  out.put<std::uint8_t>(as_bits ? 0 : options_.qbp);
  out.put<std::int32_t>(options_.qbp_kmin);
  out.put<std::int32_t>(options_.qbp_kmax);
  out.put<std::uint8_t>(static_cast<std::uint8_t>(options_.lr_scale));
  if (options_.kind == weight_kind::quantized) out.put<std::uint8_t>(static_cast<std::uint8_t>(options_.weight_bits));
  if (!as_bits) {
    if (weight_.value.empty() && !loaded_planes_.empty()) {  // decode a copy; this object stays packed
      weight_core copy = *this;
      copy.materialize();
      out.put_vector(copy.weight_.value);
    } else {
      out.put_vector(weight_.value);
    }
    return;
  }
  const std::size_t words = kernels::words_for(in_);
  const auto& ref = kernels::reference_kernels();
  if (weight_planes() > 0) {
    out.put_vector(inference_planes());
  } else {
    std::vector<std::uint64_t> sign(out_ * words), nonzero(out_ * words);
    ref.pack_ternary(weight_.value.data(), out_, in_, in_, sign.data(), nonzero.data(), words,
                     kernels::sample_mode::deterministic, 0);
    out.put_vector(sign);
    out.put_vector(nonzero);
  }
}

void weight_core::expect_payload(byte_reader& in, std::size_t inputs, std::size_t outputs, const dense_options& o,
                                 bool packed) {
  const bool as_bits = packed && o.kind != weight_kind::fp32;
  const double planes = o.kind == weight_kind::ternary ? 2.0 : o.kind == weight_kind::quantized ? o.weight_bits : 1.0;
  const double bytes =
      as_bits ? planes * static_cast<double>(outputs) * static_cast<double>(kernels::words_for(inputs)) * 8.0
              : static_cast<double>(outputs) * static_cast<double>(inputs) * 4.0;
  if (bytes > static_cast<double>(in.remaining()))
    in.invalid("weights of " + std::to_string(outputs) + "x" + std::to_string(inputs) +
               " run past the end of the data");
}

dense_options weight_core::read_options(byte_reader& in) {
  dense_options o;
  const auto kind = in.get<std::uint8_t>("weight kind");
  const auto sampling = in.get<std::uint8_t>("sampling mode");
  const auto qbp = in.get<std::uint8_t>("qbp flag");
  o.qbp_kmin = in.get<std::int32_t>("qbp range");
  o.qbp_kmax = in.get<std::int32_t>("qbp range");
  const auto glorot = in.get<std::uint8_t>("lr scale flag");
  if (kind > 3 || sampling > 1 || qbp > 1 || glorot > 2) in.invalid("unknown weight layer options");
  if (kind == static_cast<std::uint8_t>(weight_kind::quantized)) {
    o.weight_bits = in.get<std::uint8_t>("weight bits");
    if (o.weight_bits < 2 || o.weight_bits > 8 || sampling != 0) in.invalid("bad k-bit weight options");
  }
  o.kind = static_cast<weight_kind>(kind);
  o.training_sampling = static_cast<kernels::sample_mode>(sampling);
  o.qbp = qbp != 0;
  o.lr_scale = static_cast<lr_scale_kind>(glorot);
  return o;
}

void weight_core::read(byte_reader& in, bool packed) {
  std::vector<float>& w = weight_.value;
  if (!packed || options_.kind == weight_kind::fp32) {
    w = in.get_vector<float>("weights", in_ * out_);
    for (float v : w)
      if (!std::isfinite(v)) in.invalid("non-finite weight");
    weight_.grad.assign(in_ * out_, 0.0f);
    return;
  }
  const std::size_t words = kernels::words_for(in_);
  const std::size_t tail = in_ % 64;
  const std::uint64_t padding = tail ? ~((std::uint64_t{1} << tail) - 1) : 0;
  if (weight_planes() > 0) {  // binary and k-bit weights stay packed (materialize() decodes them)
    const std::size_t planes = static_cast<std::size_t>(weight_planes());
    loaded_planes_ =
        in.get_vector<std::uint64_t>(planes == 1 ? "packed sign bits" : "packed weight planes", planes * out_ * words);
    for (std::size_t pr = 0; pr < planes * out_; ++pr)
      if (loaded_planes_[pr * words + words - 1] & padding) in.invalid("packed weights have padding bits set");
    w.clear();
    weight_.grad.clear();
    return;
  }
  w.resize(in_ * out_);
  weight_.grad.assign(in_ * out_, 0.0f);
  const auto sign = in.get_vector<std::uint64_t>("packed sign bits", out_ * words);
  const auto nonzero = in.get_vector<std::uint64_t>("packed nonzero bits", out_ * words);
  for (std::size_t r = 0; r < out_; ++r) {
    if ((sign[r * words + words - 1] & padding) || (nonzero[r * words + words - 1] & padding))
      in.invalid("packed weights have padding bits set");
    for (std::size_t c = 0; c < in_; ++c) {
      const bool s = (sign[r * words + c / 64] >> (c % 64)) & 1u;
      const bool z = (nonzero[r * words + c / 64] >> (c % 64)) & 1u;
      if (s && !z) in.invalid("ternary sign bit set where the weight is zero");
      w[r * in_ + c] = z ? (s ? 1.0f : -1.0f) : 0.0f;
    }
  }
}

// The float master weights of packed binary/k-bit weights read from a model: each the value of its level.
void weight_core::materialize() {
  if (!weight_.value.empty() || loaded_planes_.empty()) return;
  const std::size_t words = kernels::words_for(in_);
  const int bits = weight_planes();
  std::vector<float>& w = weight_.value;
  w.resize(in_ * out_);
  for (std::size_t r = 0; r < out_; ++r)
    for (std::size_t c = 0; c < in_; ++c) {
      std::uint32_t u = 0;
      for (int i = 0; i < bits; ++i)
        u |= static_cast<std::uint32_t>(
                 (loaded_planes_[(static_cast<std::size_t>(i) * out_ + r) * words + c / 64] >> (c % 64)) & 1u)
             << i;
      w[r * in_ + c] = bits == 1 ? (u ? 1.0f : -1.0f) : kernels::level_value(u, bits);
    }
  weight_.grad.assign(in_ * out_, 0.0f);
  std::vector<std::uint64_t>().swap(loaded_planes_);  // the floats are the weights now
}

// Samples the weights used by this step: stochastic weights are drawn anew every training step;
// deterministic weights only change when the parameters do.
void weight_core::prepare(const step_context& ctx, std::uint32_t layer) {
  use_expectation_ = !ctx.training && ctx.expected_weights && options_.kind != weight_kind::fp32 &&
                     options_.training_sampling == kernels::sample_mode::stochastic;
  const bool stochastic = ctx.training && options_.training_sampling == kernels::sample_mode::stochastic;
  if (use_expectation_) {
    if (!expectation_ready_) transpose_master(ctx);
    expectation_ready_ = true;
    return;
  }
  if (!stochastic && inference_packed_) return;
  if (!ctx.training && weight_.value.empty() && !loaded_planes_.empty()) {  // packed model: no floats
    pack_planes(ctx, kernels::sample_mode::deterministic, 0, true);
    inference_packed_ = true;
    return;
  }
  materialize();
  const std::size_t words_in = kernels::words_for(in_), words_out = kernels::words_for(out_);
  const auto mode = stochastic ? kernels::sample_mode::stochastic : kernels::sample_mode::deterministic;
  const std::uint64_t key = kernels::derive_key(ctx.seed, ctx.step, layer, 0x5a3);
  const auto& k = ctx.kernels;
  switch (options_.kind) {
    case weight_kind::fp32:
      // Training reads the master weights in place (gemm_f32 with b_transposed packs them per call anyway);
      // inference keeps a transposed copy, made once per parameter change, for its batch-1 path.
      if (ctx.training) return;
      transpose_master(ctx);
      break;
    case weight_kind::binary:
    case weight_kind::quantized:
      pack_planes(ctx, mode, key, false);
      break;
    case weight_kind::ternary:
      sign_.resize(out_ * words_in);
      nonzero_.resize(out_ * words_in);
      sign_t_.resize(in_ * words_out);
      nonzero_t_.resize(in_ * words_out);
      parallel_rows(ctx.rt, out_, 32, [&](std::size_t r0, std::size_t r1) {
        k.pack_ternary(weight_.value.data() + r0 * in_, r1 - r0, in_, in_, sign_.data() + r0 * words_in,
                       nonzero_.data() + r0 * words_in, words_in, mode, key_for_rows(key, r0));
      });
      transpose(sign_.data(), sign_t_.data(), ctx);
      transpose(nonzero_.data(), nonzero_t_.data(), ctx);
      break;
  }
  inference_packed_ = !stochastic;
}

// Binary (one plane, sampled as `mode` says) or k-bit (k planes of the nearest levels) weights, their
// transposes, and the word-interleaved copy gemm_xnor reads when inputs are quantized.
void weight_core::pack_planes(const step_context& ctx, kernels::sample_mode mode, std::uint64_t key, bool from_loaded) {
  const std::size_t words_in = kernels::words_for(in_), words_out = kernels::words_for(out_);
  const std::size_t planes = static_cast<std::size_t>(weight_planes());
  const std::size_t plane = out_ * words_in, plane_t = in_ * words_out;
  const auto& k = ctx.kernels;
  corrections_bits_ = -1;
  sign_t_.resize(planes * plane_t);
  if (from_loaded) {  // a packed model's deterministic planes, as read
    sign_ = loaded_planes_;
  } else {
    sign_.resize(planes * plane);
    parallel_rows(ctx.rt, out_, 32, [&](std::size_t r0, std::size_t r1) {
      if (options_.kind == weight_kind::binary)
        k.pack_binary(weight_.value.data() + r0 * in_, r1 - r0, in_, in_, sign_.data() + r0 * words_in, words_in, mode,
                      key_for_rows(key, r0));
      else
        kernels::pack_levels(weight_.value.data() + r0 * in_, r1 - r0, in_, in_, options_.weight_bits,
                             sign_.data() + r0 * words_in, plane, words_in);
    });
  }
  for (std::size_t j = 0; j < planes; ++j) transpose(sign_.data() + j * plane, sign_t_.data() + j * plane_t, ctx);
  if (input_bits_[0] == 0 && input_bits_[1] == 0) return;
  xnor_bt_.resize(planes * words_in * out_);
  parallel_rows(ctx.rt, planes * words_in, 16, [&](std::size_t p0, std::size_t p1) {
    interleave_plane_words(sign_.data(), out_, words_in, p0, p1, xnor_bt_.data());
  });
}

void weight_core::forward(const float* a, std::size_t rows, float* y, const step_context& ctx) {
  const int bits = xnor_input_bits(ctx.training);
  if (bits > 0 && !use_expectation_) return forward_xnor(a, rows, bits, y, ctx);
  const bool in_place = options_.kind == weight_kind::fp32 && ctx.training;
  multiply(use_expectation_ ? weight_kind::fp32 : options_.kind, a, rows, in_, out_,
           {in_place ? weight_.value.data() : transposed_.data(), in_place, sign_t_.data(), nonzero_t_.data(),
            in_ * kernels::words_for(out_)},
           y, ctx);
}

bool weight_core::forward_conv_binary(const float* x, std::size_t images, const conv_shape& s, float* y,
                                      const step_context& ctx) {
  if (options_.kind != weight_kind::binary || use_expectation_ || xnor_input_bits(ctx.training) > 0) return false;
  if (!kernels::conv_binary_fits(s.width, s.in_channels, s.kernel, gemm_caches())) return false;
  const std::size_t positions = images * s.out_height() * s.out_width();
  // Chunks of output positions, a few per thread (a chunk rebuilds the tables of the kernel - 1 input rows it
  // shares with its neighbour); whichever chunk computes a position, its sum is the same.
  const auto threads = static_cast<std::size_t>(std::max(1, ctx.rt.threads()));
  const std::size_t chunk = std::max<std::size_t>(96, (positions / (4 * threads) + 11) / 12 * 12);
  const std::size_t ldb = kernels::words_for(out_);
  parallel_rows(ctx.rt, positions, chunk, [&](std::size_t p0, std::size_t p1) {
    run_packed_gemm(ctx.kernels, ctx.kernels.conv_binary,
                    {.x = x,
                     .images = images,
                     .height = s.height,
                     .width = s.width,
                     .channels = s.in_channels,
                     .kernel = s.kernel,
                     .same_padding = s.same_padding,
                     .p0 = p0,
                     .rows = p1 - p0,
                     .n = out_,
                     .sign = sign_t_.data(),
                     .ldb = ldb,
                     .c = y + p0 * out_,
                     .ldc = out_});
  });
  return true;
}

void weight_core::input_gradient(const float* dy, std::size_t rows, float* dx, const step_context& ctx) {
  materialize();
  multiply(options_.kind, dy, rows, out_, in_,
           {weight_.value.data(), false, sign_.data(), nonzero_.data(), out_ * kernels::words_for(in_)}, dx, ctx);
}

// dW[o][i] = sum_r dy[r][o] * x[r][i]: A(m=o, k=r) = dy[r*out + o].
void weight_core::weight_gradient(const float* dy, const float* x, std::size_t rows, float* grad, std::uint32_t layer,
                                  std::uint64_t part, const step_context& ctx) {
  materialize();
  const auto& k = ctx.kernels;
  if (!options_.qbp) {
    // A layer followed by 2x2 max-pooling gets three zeros in four of its output gradient: their steps are
    // skipped (the same sums, see skip_zero_a), 1.5x faster there; at half zeros both modes cost the same
    // (bench gemm_f32_weight_gradient). Counting is one pass over dy, against a GEMM that reads it in_ times.
    const auto zeros = static_cast<std::size_t>(std::count(dy, dy + rows * out_, 0.0f));
    const bool skip_zeros = 8 * zeros >= 5 * rows * out_;
    parallel_gemm(ctx.rt, out_, in_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
      run_packed_gemm(k, k.gemm_f32,
                      {.m = i1 - i0,
                       .n = j1 - j0,
                       .k = rows,
                       .a = dy + i0,
                       .a_rs = 1,
                       .a_cs = out_,
                       .b = x + j0,
                       .ldb = in_,
                       .skip_zero_a = skip_zeros,
                       .c = grad + i0 * in_ + j0,
                       .ldc = in_});
    });
    return;
  }
  codes_.resize(rows * in_);
  quantize_inputs(x, rows * in_, codes_.data(), layer, part, 0, ctx);
  weight_gradient_codes(dy, codes_.data(), rows, grad, layer, ctx);
}

void weight_core::weight_gradient_pm1(const float* dy, const float* x, std::size_t rows, float* grad,
                                      const step_context& ctx) {
  const auto& k = ctx.kernels;
  const std::size_t words = kernels::words_for(in_);
  input_sign_.resize(rows * words);
  parallel_rows(ctx.rt, rows, 64, [&](std::size_t r0, std::size_t r1) {
    k.pack_binary(x + r0 * in_, r1 - r0, in_, in_, input_sign_.data() + r0 * words, words,
                  kernels::sample_mode::deterministic, 0);
  });
  // grad[o][i] = sum_r dy[r][o] * x[r][i]: A(m=o, k=r) = dy[r*out + o], B = the sign bits [r][i].
  parallel_gemm(ctx.rt, out_, in_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    run_packed_gemm(k, k.gemm_binary,
                    {.m = i1 - i0,
                     .n = j1 - j0,
                     .k = rows,
                     .a = dy + i0,
                     .a_rs = 1,
                     .a_cs = out_,
                     .bits = input_sign_.data() + j0 / 64,
                     .ldb = words,
                     .c = grad + i0 * in_ + j0,
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
                                        std::uint32_t layer, const step_context& ctx) {
  const auto& k = ctx.kernels;
  // Computed as grad^T[i][o] = sum_r code(x[r][i]) * dy[r][o] and written through strides into grad[o][i].
  // The kernel's loop runs over the nonzeros of one operand, listed once per K block and reused by every
  // panel of the other: the codes (in_ per row) when in_ <= out_, else the gradient dy (out_ per row; a
  // convolution's in_ is 9x its channels, and its dy after max-pooling is mostly zeros). Same bits either way.
  // The kernel also conditions dy as it packs it (values too small to matter count as zero, and it reports
  // anything non-finite or huge), so there is no separate pass over dy.
  std::atomic<bool> out_of_range{false};
  parallel_gemm(ctx.rt, in_, out_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    bool block_out_of_range = false;
    run_packed_gemm(k, k.gemm_shift,
                    {.m = i1 - i0,
                     .n = j1 - j0,
                     .k = rows,
                     .q = codes + i0,
                     .q_rs = 1,
                     .q_cs = in_,
                     .b = dy + j0,
                     .ldb = out_,
                     .c = grad + j0 * in_ + i0,
                     .c_rs = 1,
                     .c_cs = in_,
                     .list_b = out_ < in_,
                     .b_out_of_range = &block_out_of_range});
    if (block_out_of_range) out_of_range.store(true);
  });
  if (out_of_range.load()) throw_exploding_gradient(layer, ctx);
}

// y = a W^T for k_a-bit inputs a and binary or k_w-bit weights: pack a into bit planes (bit 1 = +1,
// the engine's convention), then one XNOR-popcount GEMM per pair of planes, summed with shifts (see
// kernels.hpp, "k-bit levels"). BNN (one plane each): sum_k a_k w_k = in - 2 * popcount(a XOR w); the
// integer sums are exact, so y equals the masked-add path bit for bit. k-bit: y = S / (L_a L_w) with
// the exact integer S, one division per output.
void weight_core::forward_xnor(const float* a, std::size_t rows, int input_bits, float* y, const step_context& ctx) {
  const std::size_t words = kernels::words_for(in_), plane = rows * words;
  const std::size_t a_planes = static_cast<std::size_t>(input_bits),
                    w_planes = static_cast<std::size_t>(weight_planes());
  const auto& k = ctx.kernels;
  input_planes_.resize(a_planes * plane);
  counts_.resize(rows * out_);
  parallel_rows(ctx.rt, rows, 64, [&](std::size_t r0, std::size_t r1) {
    if (input_bits == 1)  // the SIMD sign packer: v >= 0 -> 1, as level_of for one bit
      k.pack_binary(a + r0 * in_, r1 - r0, in_, in_, input_planes_.data() + r0 * words, words,
                    kernels::sample_mode::deterministic, 0);
    else
      kernels::pack_levels(a + r0 * in_, r1 - r0, in_, in_, input_bits, input_planes_.data() + r0 * words, plane,
                           words);
  });
  const bool single = a_planes == 1 && w_planes == 1;
  if (!single) sums_.resize(rows * out_);
  const bool padded = !row_pattern_.empty();
  if (padded && corrections_bits_ != input_bits) padding_corrections(input_bits);
  const std::size_t patterns_period = std::max<std::size_t>(1, row_pattern_.size());
  const double levels = static_cast<double>((1 << input_bits) - 1) * static_cast<double>((1 << weight_planes()) - 1);
  parallel_gemm(ctx.rt, rows, out_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    for (std::size_t pa = 0; pa < a_planes; ++pa)
      for (std::size_t pw = 0; pw < w_planes; ++pw) {
        k.gemm_xnor({.m = i1 - i0,
                     .n = j1 - j0,
                     .k_words = words,
                     .k_bits = static_cast<std::int32_t>(in_),
                     .a = input_planes_.data() + pa * plane + i0 * words,
                     .lda = words,
                     .bt = xnor_bt_.data() + pw * words * out_ + j0,
                     .ldbt = out_,
                     .c = counts_.data() + i0 * out_ + j0,
                     .ldc = out_});
        if (single) break;
        const int shift = static_cast<int>(pa + pw);
        for (std::size_t i = i0; i < i1; ++i)
          for (std::size_t j = j0; j < j1; ++j) {
            const std::int64_t term = static_cast<std::int64_t>(counts_[i * out_ + j]) * (std::int64_t{1} << shift);
            sums_[i * out_ + j] = (pa == 0 && pw == 0 ? 0 : sums_[i * out_ + j]) + term;
          }
      }
    for (std::size_t i = i0; i < i1; ++i) {
      const std::int64_t* correction =
          padded ? corrections_.data() + row_pattern_[i % patterns_period] * out_ : nullptr;
      for (std::size_t j = j0; j < j1; ++j) {
        std::int64_t s = single ? counts_[i * out_ + j] : sums_[i * out_ + j];
        if (correction) s -= correction[j];
        y[i * out_ + j] = single ? static_cast<float>(s) : static_cast<float>(static_cast<double>(s) / levels);
      }
    }
  });
}

// A padded input is 0, which the plane packing reads as level u0 = level_of(0) (for one bit: +1), so the
// integer sum holds an extra (2 u0 - L_a) * w_int for each padded input, with w_int = sum_j 2^j (±1)_j
// the weight's odd integer. corrections_[p][o] sums those over the inputs pattern p pads.
void weight_core::padding_corrections(int input_bits) {
  const std::size_t words = kernels::words_for(in_), plane = out_ * words;
  const std::int64_t zero_level =
      2 * static_cast<std::int64_t>(kernels::level_of(0.0f, input_bits)) - ((std::int64_t{1} << input_bits) - 1);
  corrections_.assign(padded_.size() * out_, 0);
  for (std::size_t p = 0; p < padded_.size(); ++p)
    for (std::size_t o = 0; o < out_; ++o) {
      std::int64_t total = 0;
      for (std::uint32_t k : padded_[p])
        for (int j = 0; j < weight_planes(); ++j) {
          const bool plus = (sign_[static_cast<std::size_t>(j) * plane + o * words + k / 64] >> (k % 64)) & 1u;
          total += (plus ? 1 : -1) * (std::int64_t{1} << j);
        }
      corrections_[p * out_ + o] = zero_level * total;
    }
  corrections_bits_ = input_bits;
}

// out[rows x width] = a[rows x depth] · w, split over the fixed block grid of parallel_gemm.
void weight_core::multiply(weight_kind kind, const float* a, std::size_t rows, std::size_t depth, std::size_t width,
                           const weight_view& w, float* out, const step_context& ctx) {
  const std::size_t ldb = kernels::words_for(width);
  const auto& k = ctx.kernels;
  const int planes = kind == weight_kind::binary ? 1 : kind == weight_kind::quantized ? options_.weight_bits : 0;
  if (planes > 0) return multiply_planes(planes, a, rows, depth, width, w, out, ctx);
  parallel_gemm(ctx.rt, rows, width, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    const std::size_t m = i1 - i0, n = j1 - j0;
    const float* ai = a + i0 * depth;
    float* c = out + i0 * width + j0;
    switch (kind) {
      case weight_kind::fp32:
        run_packed_gemm(k, k.gemm_f32,
                        {.m = m,
                         .n = n,
                         .k = depth,
                         .a = ai,
                         .a_rs = depth,
                         .a_cs = 1,
                         .b = w.values_transposed ? w.values + j0 * depth : w.values + j0,
                         .ldb = w.values_transposed ? depth : width,
                         .b_transposed = w.values_transposed,
                         .c = c,
                         .ldc = width});
        break;
      case weight_kind::ternary:
        run_packed_gemm(k, k.gemm_ternary,
                        {.m = m,
                         .n = n,
                         .k = depth,
                         .a = ai,
                         .a_rs = depth,
                         .a_cs = 1,
                         .sign = w.sign + j0 / 64,
                         .nonzero = w.nonzero + j0 / 64,
                         .ldb = ldb,
                         .c = c,
                         .ldc = width});
        break;
      case weight_kind::binary:
      case weight_kind::quantized:
        break;  // multiply_planes
    }
  });
}

// Binary and k-bit weights: grouped-lookup adds per plane (binary_planes_block).
void weight_core::multiply_planes(int planes, const float* a, std::size_t rows, std::size_t depth, std::size_t width,
                                  const weight_view& w, float* out, const step_context& ctx) {
  if (planes > 1) plane_out_.resize(rows * width);
  parallel_gemm(ctx.rt, rows, width, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    binary_planes_block(ctx.kernels, planes, a, depth, w.sign, w.plane_words, width, out, plane_out_.data(), i0, i1, j0,
                        j1);
  });
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
