#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"
#include "parallel_gemm.hpp"
#include "serialize.hpp"

namespace fewmul {
namespace {

enum layer_tag : std::uint32_t { tag_dense = 1, tag_batch_norm = 2, tag_relu = 3, tag_hard_tanh = 4 };

using detail::parallel_gemm;
using detail::parallel_rows;

// Uniform in [-1, 1) from the counter hash, so initialization is the same on every platform.
float uniform_pm1(std::uint64_t key, std::uint32_t index) {
  return static_cast<float>(kernels::counter_hash(key, index) >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

std::string kind_name(const dense_options& o) {
  std::string s = o.kind == weight_kind::fp32 ? "fp32" : o.kind == weight_kind::binary ? "binary" : "ternary";
  if (o.kind != weight_kind::fp32)
    s += o.training_sampling == kernels::sample_mode::stochastic ? "(stochastic)" : "(deterministic)";
  if (o.qbp) s += "+qbp[" + std::to_string(o.qbp_kmin) + "," + std::to_string(o.qbp_kmax) + "]";
  return s;
}

class dense_layer final : public layer {
 public:
  dense_layer(std::size_t inputs, std::size_t outputs, const dense_options& options, std::uint64_t init_seed)
      : in_(inputs), out_(outputs), options_(options) {
    if (inputs == 0 || outputs == 0) throw error("dense layer needs positive sizes");
    if (options.qbp && (options.qbp_kmin < kernels::pow2_min_exponent || options.qbp_kmax > kernels::pow2_max_exponent ||
                        options.qbp_kmin > options.qbp_kmax))
      throw error("quantized-backprop exponent range [" + std::to_string(options.qbp_kmin) + ", " +
                  std::to_string(options.qbp_kmax) + "] must lie within [" +
                  std::to_string(kernels::pow2_min_exponent) + ", " + std::to_string(kernels::pow2_max_exponent) +
                  "] with kmin <= kmax");
    weight_.name = "W";
    weight_.value.resize(in_ * out_);
    weight_.grad.assign(in_ * out_, 0.0f);
    const float fan = static_cast<float>(in_ + out_);
    // fp32: Glorot uniform. Binary/ternary: uniform in [-1, 1] (the clip range) with the learning rate
    // scaled by the inverse Glorot factor instead, as BinaryConnect does.
    const float range = options_.kind == weight_kind::fp32 ? std::sqrt(6.0f / fan) : 1.0f;
    const std::uint64_t key = kernels::derive_key(init_seed, 0x1a11);
    for (std::size_t i = 0; i < weight_.value.size(); ++i)
      weight_.value[i] = range * uniform_pm1(key, static_cast<std::uint32_t>(i));
    if (options_.kind != weight_kind::fp32) {
      weight_.clip = 1.0f;
      if (options_.glorot_lr_scale) weight_.lr_scale = fan / 1.5f;
    }
  }

  std::string describe() const override {
    return "dense " + std::to_string(in_) + "->" + std::to_string(out_) + " " + kind_name(options_);
  }
  std::size_t input_size() const override { return in_; }
  std::size_t output_size() const override { return out_; }
  std::vector<parameter*> parameters() override { return {&weight_}; }
  void parameters_changed() override { inference_packed_ = expectation_ready_ = false; }

  // Forward y = x W^T and input gradient dx = dy W: a multiply-add per weight and example in fp32, a
  // masked add otherwise. Weight gradient dW = dy^T x: a multiply-add per weight and example, or with
  // quantized backprop a shift (exponent add) and an add.
  op_counts training_ops(std::size_t batch, bool input_gradient) const override {
    const double macs = static_cast<double>(batch) * in_ * out_;
    const bool fp32 = options_.kind == weight_kind::fp32;
    const double passes = input_gradient ? 2.0 : 1.0;
    op_counts c;
    (fp32 ? c.multiplications : c.additions) += passes * macs;
    c.additions += passes * (fp32 ? macs : 0.0);
    (options_.qbp ? c.shifts : c.multiplications) += macs;
    c.additions += macs;
    return c;
  }

  void write(detail::byte_writer& out, bool packed) const override {
    out.put<std::uint32_t>(tag_dense);
    out.put<std::uint64_t>(in_);
    out.put<std::uint64_t>(out_);
    out.put<std::uint8_t>(static_cast<std::uint8_t>(options_.kind));
    const bool as_bits = packed && options_.kind != weight_kind::fp32;
    // A packed model is an inference model: deterministic weights, no quantized backprop.
    out.put<std::uint8_t>(as_bits ? 0 : static_cast<std::uint8_t>(options_.training_sampling));
    out.put<std::uint8_t>(as_bits ? 0 : options_.qbp);
    out.put<std::int32_t>(options_.qbp_kmin);
    out.put<std::int32_t>(options_.qbp_kmax);
    out.put<std::uint8_t>(options_.glorot_lr_scale);
    if (!as_bits) {
      out.put_vector(weight_.value);
      return;
    }
    const std::size_t words = kernels::words_for(in_);
    const auto& ref = kernels::reference_kernels();
    std::vector<std::uint64_t> sign(out_ * words), nonzero(out_ * words);
    if (options_.kind == weight_kind::binary) {
      ref.pack_binary(weight_.value.data(), out_, in_, in_, sign.data(), words, kernels::sample_mode::deterministic, 0);
      out.put_vector(sign);
    } else {
      ref.pack_ternary(weight_.value.data(), out_, in_, in_, sign.data(), nonzero.data(), words,
                       kernels::sample_mode::deterministic, 0);
      out.put_vector(sign);
      out.put_vector(nonzero);
    }
  }

  static std::unique_ptr<layer> read(detail::byte_reader& in, bool packed) {
    const auto inputs = in.get<std::uint64_t>("dense input size");
    const auto outputs = in.get<std::uint64_t>("dense output size");
    if (inputs == 0 || outputs == 0 || inputs > (1u << 24) || outputs > (1u << 24))
      in.invalid("implausible dense layer size " + std::to_string(inputs) + "x" + std::to_string(outputs));
    dense_options o;
    const auto kind = in.get<std::uint8_t>("weight kind");
    const auto sampling = in.get<std::uint8_t>("sampling mode");
    const auto qbp = in.get<std::uint8_t>("qbp flag");
    o.qbp_kmin = in.get<std::int32_t>("qbp range");
    o.qbp_kmax = in.get<std::int32_t>("qbp range");
    const auto glorot = in.get<std::uint8_t>("lr scale flag");
    if (kind > 2 || sampling > 1 || qbp > 1 || glorot > 1) in.invalid("unknown dense layer options");
    o.kind = static_cast<weight_kind>(kind);
    o.training_sampling = static_cast<kernels::sample_mode>(sampling);
    o.qbp = qbp != 0;
    o.glorot_lr_scale = glorot != 0;
    auto l = std::make_unique<dense_layer>(inputs, outputs, o, 0);
    std::vector<float>& w = l->weight_.value;
    if (!packed || o.kind == weight_kind::fp32) {
      w = in.get_vector<float>("dense weights", inputs * outputs);
      for (float v : w)
        if (!std::isfinite(v)) in.invalid("non-finite dense weight");
      return l;
    }
    const std::size_t words = kernels::words_for(inputs);
    const auto sign = in.get_vector<std::uint64_t>("packed sign bits", outputs * words);
    std::vector<std::uint64_t> nonzero;
    if (o.kind == weight_kind::ternary) nonzero = in.get_vector<std::uint64_t>("packed nonzero bits", outputs * words);
    const std::size_t tail = inputs % 64;
    const std::uint64_t padding = tail ? ~((std::uint64_t{1} << tail) - 1) : 0;
    for (std::size_t r = 0; r < outputs; ++r) {
      if ((sign[r * words + words - 1] & padding) || (!nonzero.empty() && (nonzero[r * words + words - 1] & padding)))
        in.invalid("packed weights have padding bits set");
      for (std::size_t c = 0; c < inputs; ++c) {
        const bool s = (sign[r * words + c / 64] >> (c % 64)) & 1u;
        if (nonzero.empty()) {
          w[r * inputs + c] = s ? 1.0f : -1.0f;
          continue;
        }
        const bool z = (nonzero[r * words + c / 64] >> (c % 64)) & 1u;
        if (s && !z) in.invalid("ternary sign bit set where the weight is zero");
        w[r * inputs + c] = z ? (s ? 1.0f : -1.0f) : 0.0f;
      }
    }
    return l;
  }

  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_input(x);
    const bool use_expectation = !ctx.training && ctx.expected_weights && options_.kind != weight_kind::fp32 &&
                                 options_.training_sampling == kernels::sample_mode::stochastic;
    prepare_weights(ctx, use_expectation);
    multiply(use_expectation ? weight_kind::fp32 : options_.kind, x, out_,
             {transposed_.data(), sign_t_.data(), nonzero_t_.data()}, y, ctx);
  }

  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    const std::size_t batch = x.rows;
    const auto& k = ctx.kernels;
    // Weight gradient dW[o][i] = sum_b dy[b][o] * x[b][i]  (A(m=o, k=b) = dy[b][o]).
    if (options_.qbp) {
      condition_gradient(dy, ctx);
      codes_.resize(batch * in_);
      const std::uint64_t key = kernels::derive_key(ctx.seed, ctx.step, index, 0x9b9);
      parallel_rows(ctx.rt, batch, 16, [&](std::size_t r0, std::size_t r1) {
        k.quantize_pow2(x.row(r0), (r1 - r0) * in_, codes_.data() + r0 * in_, options_.qbp_kmin, options_.qbp_kmax, key,
                        static_cast<std::uint32_t>(r0 * in_));
      });
      parallel_gemm(ctx.rt, out_, in_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
        k.gemm_shift(i1 - i0, j1 - j0, batch, conditioned_.data() + i0, 1, out_, codes_.data() + j0, in_,
                     weight_.grad.data() + i0 * in_ + j0, in_);
      });
    } else {
      parallel_gemm(ctx.rt, out_, in_, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
        k.gemm_f32(i1 - i0, j1 - j0, batch, dy.data.data() + i0, 1, out_, x.data.data() + j0, in_,
                   weight_.grad.data() + i0 * in_ + j0, in_);
      });
    }
    if (dx == nullptr) return;
    // dx[b][i] = sum_o dy[b][o] * W[o][i].
    multiply(options_.kind, dy, in_, {weight_.value.data(), sign_.data(), nonzero_.data()}, *dx, ctx);
  }

 private:
  // The step's weights in one layout: [in][out] (forward) or [out][in] (input gradient); `values`
  // for fp32, `sign`/`nonzero` bit planes (row stride words_for(width)) for binary and ternary.
  struct weight_view {
    const float* values;
    const std::uint64_t* sign;
    const std::uint64_t* nonzero;
  };

  // out[rows x width] = a[rows x depth] · w, split over the fixed block grid of parallel_gemm.
  void multiply(weight_kind kind, const matrix& a, std::size_t width, const weight_view& w, matrix& out,
                const step_context& ctx) {
    const std::size_t rows = a.rows, depth = a.cols, ldb = kernels::words_for(width);
    const auto& k = ctx.kernels;
    out.resize(rows, width);
    if (kind == weight_kind::binary) {
      rowsum_.resize(rows);
      parallel_rows(ctx.rt, rows, 64, [&](std::size_t r0, std::size_t r1) {
        kernels::row_sums(a.row(r0), r1 - r0, depth, depth, 1, rowsum_.data() + r0);
      });
    }
    parallel_gemm(ctx.rt, rows, width, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
      const std::size_t m = i1 - i0, n = j1 - j0;
      float* c = out.row(i0) + j0;
      switch (kind) {
        case weight_kind::fp32: k.gemm_f32(m, n, depth, a.row(i0), depth, 1, w.values + j0, width, c, width); break;
        case weight_kind::binary:
          k.gemm_binary(m, n, depth, a.row(i0), depth, 1, rowsum_.data() + i0, w.sign + j0 / 64, ldb, c, width);
          break;
        case weight_kind::ternary:
          k.gemm_ternary(m, n, depth, a.row(i0), depth, 1, w.sign + j0 / 64, w.nonzero + j0 / 64, ldb, c, width);
          break;
      }
    });
  }

  void check_input(const matrix& x) const {
    if (x.cols != in_)
      throw error("layer " + std::to_string(index) + " (" + describe() + ") got inputs of width " +
                  std::to_string(x.cols));
  }

  // Samples the weights used by this step: stochastic weights are drawn anew every training step;
  // deterministic weights only change when the parameters do.
  void prepare_weights(const step_context& ctx, bool use_expectation) {
    const bool stochastic = ctx.training && options_.training_sampling == kernels::sample_mode::stochastic;
    if (use_expectation) {
      if (!expectation_ready_) transpose_master(ctx);
      expectation_ready_ = true;
      return;
    }
    if (!stochastic && inference_packed_) return;
    const std::size_t words_in = kernels::words_for(in_), words_out = kernels::words_for(out_);
    const auto mode = stochastic ? kernels::sample_mode::stochastic : kernels::sample_mode::deterministic;
    const std::uint64_t key = kernels::derive_key(ctx.seed, ctx.step, index, 0x5a3);
    const auto& k = ctx.kernels;
    switch (options_.kind) {
      case weight_kind::fp32: transpose_master(ctx); break;
      case weight_kind::binary:
        sign_.resize(out_ * words_in);
        sign_t_.resize(in_ * words_out);
        parallel_rows(ctx.rt, out_, 32, [&](std::size_t r0, std::size_t r1) {
          k.pack_binary(weight_.value.data() + r0 * in_, r1 - r0, in_, in_, sign_.data() + r0 * words_in, words_in,
                        mode, key_for_rows(key, r0));
        });
        transpose(sign_, sign_t_, ctx);
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
        transpose(sign_, sign_t_, ctx);
        transpose(nonzero_, nonzero_t_, ctx);
        break;
    }
    inference_packed_ = !stochastic;
  }

  void transpose_master(const step_context& ctx) {
    transposed_.resize(in_ * out_);
    parallel_rows(ctx.rt, in_, 64, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t i = r0; i < r1; ++i)
        for (std::size_t o = 0; o < out_; ++o) transposed_[i * out_ + o] = weight_.value[o * in_ + i];
    });
  }

  // The pack kernels number elements from their first row; a key per row chunk keeps every weight's
  // random stream distinct across chunks.
  static std::uint64_t key_for_rows(std::uint64_t key, std::size_t first_row) {
    return kernels::derive_key(key, first_row);
  }

  // Transposes [out][in] bits into [in][out] bits in 64-row stripes of the output.
  void transpose(const std::vector<std::uint64_t>& rows_o, std::vector<std::uint64_t>& rows_i,
                 const step_context& ctx) const {
    const std::size_t words_in = kernels::words_for(in_), words_out = kernels::words_for(out_);
    parallel_rows(ctx.rt, out_, 64, [&](std::size_t o0, std::size_t o1) {
      // Output words o0/64 of every row i: input rows o0..o1 transposed.
      kernels::transpose_bits(rows_o.data() + o0 * words_in, o1 - o0, in_, words_in, rows_i.data() + o0 / 64,
                              words_out);
    });
  }

  // gemm_shift needs each gradient to be 0 or within [2^-110, 2^110]: values too small to matter are
  // flushed to 0, and anything non-finite or huge stops training with a clear message.
  void condition_gradient(const matrix& dy, const step_context& ctx) {
    conditioned_.resize(dy.data.size());
    const float tiny = std::ldexp(1.0f, -kernels::shift_safe_exponent);
    const float huge = std::ldexp(1.0f, kernels::shift_safe_exponent);
    std::atomic<bool> bad{false};
    parallel_rows(ctx.rt, dy.data.size(), 16384, [&](std::size_t i0, std::size_t i1) {
      bool chunk_bad = false;
      for (std::size_t i = i0; i < i1; ++i) {
        const float v = dy.data[i];
        const float a = std::fabs(v);
        chunk_bad |= !(a <= huge);
        conditioned_[i] = a < tiny ? 0.0f : v;
      }
      if (chunk_bad) bad.store(true);
    });
    if (bad.load())
      throw error("non-finite or exploding gradient at layer " + std::to_string(index) + " (" + describe() +
                  ") in step " + std::to_string(ctx.step));
  }

  std::size_t in_, out_;
  dense_options options_;
  parameter weight_;  // [out][in]
  bool inference_packed_ = false;
  bool expectation_ready_ = false;
  std::vector<std::uint64_t> sign_, nonzero_;      // [out][words(in)]
  std::vector<std::uint64_t> sign_t_, nonzero_t_;  // [in][words(out)]
  std::vector<float> transposed_;                  // fp32 W^T [in][out]
  std::vector<float> rowsum_;
  std::vector<float> conditioned_;
  std::vector<std::int8_t> codes_;
};

class batch_norm_layer final : public layer {
 public:
  batch_norm_layer(std::size_t features, float epsilon, float momentum)
      : n_(features), epsilon_(epsilon), momentum_(momentum) {
    gamma_.name = "gamma";
    gamma_.value.assign(n_, 1.0f);
    gamma_.grad.assign(n_, 0.0f);
    beta_.name = "beta";
    beta_.value.assign(n_, 0.0f);
    beta_.grad.assign(n_, 0.0f);
    running_mean_.assign(n_, 0.0f);
    running_var_.assign(n_, 1.0f);
  }
  std::string describe() const override { return "batchnorm " + std::to_string(n_); }
  std::size_t input_size() const override { return n_; }
  std::size_t output_size() const override { return n_; }
  std::vector<parameter*> parameters() override { return {&gamma_, &beta_}; }
  std::vector<std::vector<float>*> buffers() override { return {&running_mean_, &running_var_}; }

  // Counted as in Lin et al.: three multiplications per feature and example (scale in the forward
  // pass, scale and the xhat product in the backward pass); sums and differences as additions.
  op_counts training_ops(std::size_t batch, bool) const override {
    const double n = static_cast<double>(batch) * n_;
    return op_counts{3.0 * n, 6.0 * n, 0.0};
  }

  void write(detail::byte_writer& out, bool) const override {
    out.put<std::uint32_t>(tag_batch_norm);
    out.put<std::uint64_t>(n_);
    out.put<float>(epsilon_);
    out.put<float>(momentum_);
    out.put_vector(gamma_.value);
    out.put_vector(beta_.value);
    out.put_vector(running_mean_);
    out.put_vector(running_var_);
  }

  static std::unique_ptr<layer> read(detail::byte_reader& in) {
    const auto n = in.get<std::uint64_t>("batch-norm size");
    if (n == 0 || n > (1u << 24)) in.invalid("implausible batch-norm size " + std::to_string(n));
    const float epsilon = in.get<float>("batch-norm epsilon"), momentum = in.get<float>("batch-norm momentum");
    if (!(epsilon > 0.0f) || !(momentum >= 0.0f && momentum <= 1.0f)) in.invalid("bad batch-norm epsilon or momentum");
    auto l = std::make_unique<batch_norm_layer>(n, epsilon, momentum);
    l->gamma_.value = in.get_vector<float>("batch-norm scale", n);
    l->beta_.value = in.get_vector<float>("batch-norm shift", n);
    l->running_mean_ = in.get_vector<float>("batch-norm mean", n);
    l->running_var_ = in.get_vector<float>("batch-norm variance", n);
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(l->gamma_.value[i]) || !std::isfinite(l->beta_.value[i]) ||
          !std::isfinite(l->running_mean_[i]) || !(l->running_var_[i] >= 0.0f) || !std::isfinite(l->running_var_[i]))
        in.invalid("non-finite or negative batch-norm statistics");
    return l;
  }

  // Work is split over fixed blocks of features; each feature's sums over the batch run in order.
  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    if (x.cols != n_) throw error("layer " + std::to_string(index) + " (" + describe() + ") got width " + std::to_string(x.cols));
    const std::size_t batch = x.rows;
    y.resize(batch, n_);
    if (!ctx.training) {
      parallel_rows(ctx.rt, batch, 64, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t b = r0; b < r1; ++b)
          for (std::size_t f = 0; f < n_; ++f) {
            const float inv_std = 1.0f / std::sqrt(running_var_[f] + epsilon_);
            y.at(b, f) = gamma_.value[f] * (x.at(b, f) - running_mean_[f]) * inv_std + beta_.value[f];
          }
      });
      return;
    }
    if (batch < 2) throw error("batch normalization needs a minibatch of at least 2 examples in training");
    mean_.resize(n_);
    inv_std_.resize(n_);
    parallel_rows(ctx.rt, n_, 64, [&](std::size_t f0, std::size_t f1) {
      for (std::size_t f = f0; f < f1; ++f) mean_[f] = 0.0f;
      for (std::size_t b = 0; b < batch; ++b)
        for (std::size_t f = f0; f < f1; ++f) mean_[f] += x.at(b, f);
      for (std::size_t f = f0; f < f1; ++f) mean_[f] /= static_cast<float>(batch);
      for (std::size_t f = f0; f < f1; ++f) inv_std_[f] = 0.0f;  // holds the variance until the end
      for (std::size_t b = 0; b < batch; ++b)
        for (std::size_t f = f0; f < f1; ++f) {
          const float d = x.at(b, f) - mean_[f];
          inv_std_[f] += d * d;
        }
      for (std::size_t f = f0; f < f1; ++f) {
        const float var = inv_std_[f] / static_cast<float>(batch);
        const float unbiased = inv_std_[f] / static_cast<float>(batch - 1);
        running_mean_[f] = (1.0f - momentum_) * running_mean_[f] + momentum_ * mean_[f];
        running_var_[f] = (1.0f - momentum_) * running_var_[f] + momentum_ * unbiased;
        inv_std_[f] = 1.0f / std::sqrt(var + epsilon_);
      }
      for (std::size_t b = 0; b < batch; ++b)
        for (std::size_t f = f0; f < f1; ++f)
          y.at(b, f) = gamma_.value[f] * ((x.at(b, f) - mean_[f]) * inv_std_[f]) + beta_.value[f];
    });
  }

  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    const std::size_t batch = x.rows;
    if (dx) dx->resize(batch, n_);
    parallel_rows(ctx.rt, n_, 64, [&](std::size_t f0, std::size_t f1) {
      // With xhat = (x - mean) * inv_std:  dgamma = sum dy*xhat, dbeta = sum dy and
      // dx = gamma*inv_std/B * (B*dy - dbeta - xhat*dgamma).
      for (std::size_t f = f0; f < f1; ++f) gamma_.grad[f] = beta_.grad[f] = 0.0f;
      for (std::size_t b = 0; b < batch; ++b)
        for (std::size_t f = f0; f < f1; ++f) {
          const float xhat = (x.at(b, f) - mean_[f]) * inv_std_[f];
          gamma_.grad[f] += dy.at(b, f) * xhat;
          beta_.grad[f] += dy.at(b, f);
        }
      if (!dx) return;
      const float count = static_cast<float>(batch);
      for (std::size_t b = 0; b < batch; ++b)
        for (std::size_t f = f0; f < f1; ++f) {
          const float xhat = (x.at(b, f) - mean_[f]) * inv_std_[f];
          dx->at(b, f) = gamma_.value[f] * inv_std_[f] / count *
                         (count * dy.at(b, f) - beta_.grad[f] - xhat * gamma_.grad[f]);
        }
    });
  }

 private:
  std::size_t n_;
  float epsilon_, momentum_;
  parameter gamma_, beta_;
  std::vector<float> running_mean_, running_var_;
  std::vector<float> mean_, inv_std_;
};

// Element-wise activations: y = f(x), dx = dy * f'(x).
template <class F, class G>
class elementwise_layer final : public layer {
 public:
  elementwise_layer(std::uint32_t tag, std::string name, std::size_t n, F f, G gate)
      : tag_(tag), name_(std::move(name)), n_(n), f_(f), gate_(gate) {}
  op_counts training_ops(std::size_t, bool) const override { return {}; }  // comparisons only
  void write(detail::byte_writer& out, bool) const override {
    out.put<std::uint32_t>(tag_);
    out.put<std::uint64_t>(n_);
  }
  std::string describe() const override { return name_ + " " + std::to_string(n_); }
  std::size_t input_size() const override { return n_; }
  std::size_t output_size() const override { return n_; }
  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    if (x.cols != n_) throw error("layer " + std::to_string(index) + " (" + describe() + ") got width " + std::to_string(x.cols));
    y.resize(x.rows, n_);
    parallel_rows(ctx.rt, x.data.size(), 65536, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) y.data[i] = f_(x.data[i]);
    });
  }
  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    if (!dx) return;
    dx->resize(x.rows, n_);
    parallel_rows(ctx.rt, x.data.size(), 65536, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) dx->data[i] = gate_(x.data[i]) ? dy.data[i] : 0.0f;
    });
  }

 private:
  std::uint32_t tag_;
  std::string name_;
  std::size_t n_;
  F f_;
  G gate_;
};

template <class F, class G>
std::unique_ptr<layer> make_elementwise(std::uint32_t tag, std::string name, std::size_t n, F f, G gate) {
  return std::make_unique<elementwise_layer<F, G>>(tag, std::move(name), n, f, gate);
}

}  // namespace

std::unique_ptr<layer> make_dense(std::size_t inputs, std::size_t outputs, const dense_options& options,
                                  std::uint64_t init_seed) {
  return std::make_unique<dense_layer>(inputs, outputs, options, init_seed);
}

std::unique_ptr<layer> make_batch_norm(std::size_t features, float epsilon, float momentum) {
  return std::make_unique<batch_norm_layer>(features, epsilon, momentum);
}

std::unique_ptr<layer> make_relu(std::size_t features) {
  return make_elementwise(
      tag_relu, "relu", features, [](float v) { return v > 0.0f ? v : 0.0f; }, [](float v) { return v > 0.0f; });
}

std::unique_ptr<layer> make_hard_tanh(std::size_t features) {
  return make_elementwise(
      tag_hard_tanh, "hardtanh", features, [](float v) { return v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v; },
      [](float v) { return v >= -1.0f && v <= 1.0f; });
}

std::unique_ptr<layer> read_layer(detail::byte_reader& in, bool packed) {
  const auto tag = in.get<std::uint32_t>("layer type");
  switch (tag) {
    case tag_dense: return dense_layer::read(in, packed);
    case tag_batch_norm: return batch_norm_layer::read(in);
    case tag_relu:
    case tag_hard_tanh: {
      const auto n = in.get<std::uint64_t>("activation size");
      if (n == 0 || n > (1u << 24)) in.invalid("implausible activation size " + std::to_string(n));
      return tag == tag_relu ? make_relu(n) : make_hard_tanh(n);
    }
    default: in.invalid("unknown layer type " + std::to_string(tag));
  }
}

}  // namespace fewmul
