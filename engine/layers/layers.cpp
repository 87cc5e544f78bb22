#include <algorithm>
#include <functional>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"
#include "runtime/parallel_gemm.hpp"
#include "layers/layer_io.hpp"
#include "model/serialize.hpp"
#include "layers/weight_core.hpp"

namespace fewmul {
namespace {

using detail::check_width;
using detail::parallel_rows;
using detail::weight_core;
using namespace detail;  // layer tags

class dense_layer final : public detail::serializable_layer {
 public:
  // `initialize` false: no weights yet (read() fills them, packed bits staying packed).
  dense_layer(std::size_t inputs, std::size_t outputs, const dense_options& options, std::uint64_t init_seed,
              bool initialize = true)
      : core_(inputs, outputs, options, init_seed, static_cast<float>(inputs + outputs), initialize) {}

  std::string describe() const override {
    return "dense " + std::to_string(core_.inputs()) + "->" + std::to_string(core_.outputs()) + " " + core_.kind_name();
  }
  std::size_t input_size() const override { return core_.inputs(); }
  std::size_t output_size() const override { return core_.outputs(); }
  std::vector<parameter*> parameters() override { return {&core_.weight()}; }
  void parameters_changed() override { core_.invalidate(); }
  void set_input_bits(int inference_bits, int training_bits) override {
    core_.set_input_bits(inference_bits, training_bits);
    core_.invalidate();
  }
  const weight_core& core() const { return core_; }

  op_counts training_ops(std::size_t batch, bool input_gradient) const override {
    op_counts c;
    const double rows = static_cast<double>(batch);
    core_.count_product(c, rows, false);
    if (input_gradient) core_.count_product(c, rows, false, true);
    core_.count_product(c, rows, true);
    return c;
  }

  void write(detail::byte_writer& out, bool packed) const override {
    out.put<std::uint32_t>(tag_dense);
    out.put<std::uint64_t>(core_.inputs());
    out.put<std::uint64_t>(core_.outputs());
    core_.write(out, packed);
  }

  static std::unique_ptr<layer> read(detail::byte_reader& in, bool packed) {
    const auto inputs = in.get<std::uint64_t>("dense input size");
    const auto outputs = in.get<std::uint64_t>("dense output size");
    if (inputs == 0 || outputs == 0 || inputs > (1u << 24) || outputs > (1u << 24))
      in.invalid("implausible dense layer size " + std::to_string(inputs) + "x" + std::to_string(outputs));
    const dense_options options = weight_core::read_options(in);
    weight_core::expect_payload(in, inputs, outputs, options, packed);
    auto l = std::make_unique<dense_layer>(inputs, outputs, options, 0, false);
    l->core_.read(in, packed);
    return l;
  }

  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_width(*this, x);
    core_.prepare(ctx, index, masters_in_slices_ ? process_rows_.data() : nullptr);
    y.resize(x.rows, core_.outputs());
    core_.forward(x.data.data(), x.rows, y.data.data(), ctx);
  }

  // The weight gradient is one product over the whole minibatch, whatever its parts (collective.hpp): with
  // several processes each gathers every process's rows of dy and x (QBP: of x's codes, each process rounding
  // its own rows with the random indices of the whole minibatch's) and computes its slice of the outputs.
  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    const std::size_t in = core_.inputs(), out = core_.outputs();
    const bool pm1_inputs = core_.xnor_input_bits(true) == 1;  // after a sign activation: additions only
    float* grad = core_.weight().grad.data();
    const batch_split* split = parts_of(ctx);
    if (split == nullptr || split->comm->size == 1) {
      if (pm1_inputs)
        core_.weight_gradient_pm1(dy.data.data(), x.data.data(), x.rows, grad, ctx);
      else
        core_.weight_gradient(dy.data.data(), x.data.data(), x.rows, grad, index, 0, ctx);
    } else {
      const collective& comm = *split->comm;
      const std::size_t rows = split->batch_rows;
      const auto ranks = static_cast<std::size_t>(comm.size), rank = static_cast<std::size_t>(comm.rank);
      // Gathers every process's rows of a [rows][width] array of `bytes`-byte elements (this one's at `mine`).
      auto gather_rows = [&](const void* mine, std::size_t width, std::size_t bytes, std::vector<float>& all) {
        offsets_.resize(ranks + 1);
        for (std::size_t r = 0; r <= ranks; ++r)
          offsets_[r] =
              part_begin(rows, split->parts, first_part(split->parts, static_cast<int>(r), comm.size)) * width * bytes;
        all.resize((rows * width * bytes + sizeof(float) - 1) / sizeof(float));
        return comm.gather_ranges(comm.context, mine, offsets_.data(), all.data());
      };
      const auto* all_dy = static_cast<const float*>(gather_rows(dy.data.data(), out, sizeof(float), all_dy_));
      // Process r's outputs: rows [process_rows_[r], process_rows_[r + 1]) of the gradient, multiples of 32 (the
      // chunks of weight sampling, weight_core::pack) but the last.
      process_rows_.resize(ranks + 1);
      slice_offsets_.resize(ranks + 1);
      for (std::size_t r = 0; r <= ranks; ++r) {
        process_rows_[r] = r == ranks ? out : out * r / ranks / 32 * 32;
        slice_offsets_[r] = process_rows_[r] * in;
      }
      const output_range mine{process_rows_[rank], process_rows_[rank + 1]};
      // Sampled weights only: a product that reads the master weights themselves needs all of them every step.
      // Otherwise the optimizer updates this process's slice only: from the next step on, the others' weights
      // are sampled by them (prepare).
      masters_in_slices_ = core_.sampled() && split->update_in_slices(grad, slice_offsets_.data());
      if (core_.options().qbp && !pm1_inputs) {
        codes_.resize(x.rows * in);
        core_.quantize_inputs(x.data.data(), x.rows * in, codes_.data(), index, 0,
                              static_cast<std::uint32_t>(split->first_row * in), ctx);
        const auto* all_codes = static_cast<const std::int8_t*>(gather_rows(codes_.data(), in, 1, all_x_));
        core_.weight_gradient_codes(all_dy, all_codes, rows, grad, index, ctx, mine);
      } else {
        const auto* all_x = static_cast<const float*>(gather_rows(x.data.data(), in, sizeof(float), all_x_));
        if (pm1_inputs)
          core_.weight_gradient_pm1(all_dy, all_x, rows, grad, ctx, mine);
        else
          core_.weight_gradient(all_dy, all_x, rows, grad, index, 0, ctx, mine);
      }
      if (!masters_in_slices_) {  // every process updates all: the others' slices of the gradient
        for (std::size_t r = 0; r <= ranks; ++r) offsets_[r] = slice_offsets_[r] * sizeof(float);
        const void* all = comm.gather_ranges(comm.context, grad + slice_offsets_[rank], offsets_.data(), grad);
        if (all != grad) std::memcpy(grad, all, in * out * sizeof(float));
      }
    }
    if (dx == nullptr) return;
    dx->resize(x.rows, core_.inputs());
    core_.input_gradient(dy.data.data(), x.rows, dx->data.data(), ctx);
  }

 private:
  weight_core core_;
  std::vector<float> all_x_, all_dy_;  // with several processes: every process's rows of x (or codes) and dy
  std::vector<std::int8_t> codes_;     // QBP with several processes: this process's rows of x as codes
  std::vector<std::size_t> offsets_;
  std::vector<std::size_t> process_rows_, slice_offsets_;  // each process's output rows, and their elements
  bool masters_in_slices_ = false;  // this process's copy of the master weights is up to date in its rows only
};

// Batch normalization of `features` channels, each seen at `spatial` positions per example (1 for a
// dense layer's output; height*width after a convolution, whose outputs are stored channel-last).
// Sums over the batch run in fixed chunks of rows whose partial sums are added in chunk order, so
// the result does not depend on the thread count.
class batch_norm_layer final : public detail::serializable_layer {
 public:
  batch_norm_layer(std::size_t features, std::size_t spatial, float epsilon, float momentum, bool shift)
      : n_(features), spatial_(spatial), epsilon_(epsilon), momentum_(momentum), shift_(shift) {
    if (features == 0 || spatial == 0) throw error("batch normalization needs positive sizes");
    gamma_.name = "gamma";
    gamma_.value.assign(n_, 1.0f);
    gamma_.grad.assign(n_, 0.0f);
    beta_.name = "beta";
    beta_.value.assign(n_, 0.0f);
    beta_.grad.assign(n_, 0.0f);
    running_mean_.assign(n_, 0.0f);
    running_var_.assign(n_, 1.0f);
  }
  std::string describe() const override {
    return std::string(shift_ ? "shift-batchnorm " : "batchnorm ") + std::to_string(n_) +
           (spatial_ > 1 ? " channels x " + std::to_string(spatial_) : "");
  }
  std::size_t input_size() const override { return n_ * spatial_; }
  std::size_t output_size() const override { return n_ * spatial_; }
  std::vector<parameter*> parameters() override { return {&gamma_, &beta_}; }
  std::vector<std::vector<float>*> buffers() override { return {&running_mean_, &running_var_}; }
  // A ReLU after it is applied in its kernels (batch_norm_params::relu): the forward pass writes the ReLU's
  // output, the backward pass takes the ReLU's output gradient. Applied twice (a caller running the layers
  // one by one), ReLU changes nothing.
  bool absorb_next(const serializable_layer& next) override {
    relu_ = next.is_relu() && next.input_size() == output_size();
    return relu_;
  }

  // Counted as in Lin et al.: three multiplications per value (scale in the forward pass, scale and
  // the xhat product in the backward pass); sums and differences as additions. Shift-based: the
  // forward products (variance, 1/std, gamma) are shifts.
  op_counts training_ops(std::size_t batch, bool) const override {
    const double n = static_cast<double>(batch) * static_cast<double>(n_ * spatial_);
    return shift_ ? op_counts{2.0 * n, 6.0 * n, 3.0 * n} : op_counts{3.0 * n, 6.0 * n, 0.0};
  }

  // Inference statistics: the factor 1/sqrt(var + eps) per channel (AP2-rounded when shift-based).
  const std::vector<float>& inference_inv_std(const std::vector<float>& var) {
    running_inv_std_.resize(n_);
    for (std::size_t f = 0; f < n_; ++f) {
      const float s = 1.0f / std::sqrt(var[f] + epsilon_);
      running_inv_std_[f] = shift_ ? ap2(s) : s;
    }
    return running_inv_std_;
  }
  // `expected`: the statistics re-estimated under E[Wb], where there are some; else the running
  // (deployed) ones, which are what model files hold.
  void view(batch_norm_view& v, bool expected = false) {
    const bool use_expected = expected && !expected_mean_.empty();
    v.channels = n_;
    v.positions = spatial_;
    v.inv_std = inference_inv_std(use_expected ? expected_var_ : running_var_).data();
    v.gamma = refresh_gamma_used();
    v.beta = beta_.value.data();
    v.mean = use_expected ? expected_mean_.data() : running_mean_.data();
    v.var = use_expected ? expected_var_.data() : running_var_.data();
    v.shift = shift_;
  }
  std::size_t channels() const { return n_; }
  std::size_t positions() const { return spatial_; }
  bool shift() const { return shift_; }
  // Test-time re-estimation (reestimate_batch_norm): replaces the running statistics, or with
  // `expected` sets those used at inference with E[Wb] (kept apart: the model file holds the others).
  void set_statistics(std::vector<float> mean, std::vector<float> var, bool expected) {
    if (mean.size() != n_ || var.size() != n_) throw error("batch-norm statistics of the wrong size");
    (expected ? expected_mean_ : running_mean_) = std::move(mean);
    (expected ? expected_var_ : running_var_) = std::move(var);
  }
  void clear_expected_statistics() {
    expected_mean_.clear();
    expected_var_.clear();
  }

  void write(detail::byte_writer& out, bool) const override {
    out.put<std::uint32_t>(shift_ ? tag_shift_batch_norm : spatial_ == 1 ? tag_batch_norm : tag_batch_norm_spatial);
    out.put<std::uint64_t>(n_);
    if (spatial_ != 1 || shift_) out.put<std::uint64_t>(spatial_);
    out.put<float>(epsilon_);
    out.put<float>(momentum_);
    out.put_vector(gamma_.value);
    out.put_vector(beta_.value);
    out.put_vector(running_mean_);
    out.put_vector(running_var_);
  }

  static std::unique_ptr<layer> read(detail::byte_reader& in, bool spatial, bool shift) {
    const auto n = in.get<std::uint64_t>("batch-norm size");
    const auto s = spatial ? in.get<std::uint64_t>("batch-norm positions") : 1;
    if (n == 0 || n > (1u << 24) || s == 0 || s > (1u << 24) || n * s > (1u << 26))
      in.invalid("implausible batch-norm size " + std::to_string(n) + "x" + std::to_string(s));
    const float epsilon = in.get<float>("batch-norm epsilon"), momentum = in.get<float>("batch-norm momentum");
    // eps in [1e-10, 1]: +Inf zeroes every output, a tiny eps over a zero variance scales by ~1e20.
    if (!(epsilon >= 1e-10f && epsilon <= 1.0f) || !(momentum >= 0.0f && momentum <= 1.0f))
      in.invalid("bad batch-norm epsilon or momentum");
    in.expect_at_least(n * 4 * sizeof(float), "batch-norm parameters");
    auto l = std::make_unique<batch_norm_layer>(n, s, epsilon, momentum, shift);
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

  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_width(*this, x);
    const std::size_t rows = x.rows * spatial_;  // one row per (example, position), n_ values each
    const float* xv = x.data.data();
    y.resize(x.rows, n_ * spatial_);
    float* yv = y.data.data();
    if (!ctx.training) {
      batch_norm_view v;
      view(v, ctx.expected_weights);
      const kernels::batch_norm_params p{
          .x = xv, .out = yv, .mean = v.mean, .inv_std = v.inv_std, .gamma = v.gamma, .beta = v.beta, .relu = relu_};
      for_rows(ctx, rows, [&](std::size_t r0, std::size_t r1) { ctx.kernels.batch_norm_inference(block(p, r0, r1)); });
      return;
    }
    const std::size_t all_rows = (ctx.split ? ctx.split->batch_rows : x.rows) * spatial_;
    if (all_rows < 2) throw error("batch normalization needs at least 2 values per channel in training");
    const float count = static_cast<float>(all_rows);
    mean_.resize(n_);
    inv_std_.resize(n_);
    kernels::batch_norm_params p{.x = xv, .mean = mean_.data(), .sum = kernels::batch_norm_sum::values};
    // Shift-based (Hubara et al., Algorithm 3): the variance sums C * AP2(C), C = x - mean.
    const auto squares = shift_ ? kernels::batch_norm_sum::shift_squares : kernels::batch_norm_sum::squares;
    auto statistics = [&](std::size_t f0, std::size_t f1) {
      for (std::size_t f = f0; f < f1; ++f) {
        const float var = inv_std_[f] / count;
        const float unbiased = inv_std_[f] / (count - 1.0f);
        running_mean_[f] = (1.0f - momentum_) * running_mean_[f] + momentum_ * mean_[f];
        running_var_[f] = (1.0f - momentum_) * running_var_[f] + momentum_ * unbiased;
        inv_std_[f] = 1.0f / std::sqrt(var + epsilon_);
        if (shift_) inv_std_[f] = ap2(inv_std_[f]);
      }
    };
    kernels::batch_norm_params normalize = p;
    normalize.out = yv;
    normalize.inv_std = inv_std_.data();
    normalize.gamma = refresh_gamma_used();
    normalize.beta = beta_.value.data();
    normalize.relu = relu_;
    if (one_chunk(ctx, rows)) {
      // Every row in one chunk: each feature block's sums, statistics and outputs in one task, one parallel
      // region for the pass. The sums are the same kernel calls on the same blocks as below; the outputs come in
      // feature blocks instead of row chunks, the same bits (the element-wise kernels give them for any split).
      for_features(ctx, [&](std::size_t f0, std::size_t f1) {
        column_block_sums(ctx, p, rows, f0, f1, mean_.data());
        for (std::size_t f = f0; f < f1; ++f) mean_[f] /= count;
        kernels::batch_norm_params q = p;
        q.sum = squares;
        column_block_sums(ctx, q, rows, f0, f1, inv_std_.data());
        statistics(f0, f1);
        ctx.kernels.batch_norm_forward(block(normalize, 0, rows, f0, f1));
      });
      return;
    }
    column_sums(ctx, x.rows, n_, p, mean_.data());
    for (std::size_t f = 0; f < n_; ++f) mean_[f] /= count;
    p.sum = squares;
    column_sums(ctx, x.rows, n_, p, inv_std_.data());
    statistics(0, n_);
    for_rows(ctx, rows,
             [&](std::size_t r0, std::size_t r1) { ctx.kernels.batch_norm_forward(block(normalize, r0, r1)); });
  }

  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    const std::size_t rows = x.rows * spatial_;
    const float* xv = x.data.data();
    const float* dv = dy.data.data();
    // With xhat = (x - mean) * inv_std:  dgamma = sum dy*xhat, dbeta = sum dy and
    // dx = gamma*inv_std/N * (N*dy - dbeta - xhat*dgamma), N values per channel. Shift-based: the same
    // with the AP2-rounded gamma and inv_std of the forward pass (AP2 passes gradients straight through).
    // Both sums in one pass (and one fold over the parts): gamma's gradient in [0, n), beta's in [n, 2n).
    grad_sums_.resize(2 * n_);
    kernels::batch_norm_params p{.x = xv,
                                 .dy = dv,
                                 .mean = mean_.data(),
                                 .inv_std = inv_std_.data(),
                                 .gamma = gamma_used_.data(),
                                 .beta = beta_.value.data(),
                                 .relu = relu_};
    p.sum = kernels::batch_norm_sum::gradients;
    kernels::batch_norm_params gradient = p;
    if (dx) {
      dx->resize(x.rows, n_ * spatial_);
      gradient.out = dx->data.data();
      gradient.gamma_grad = gamma_.grad.data();
      gradient.beta_grad = beta_.grad.data();
      gradient.count = static_cast<float>((ctx.split ? ctx.split->batch_rows : x.rows) * spatial_);
    }
    if (one_chunk(ctx, rows)) {  // as in forward: one task per feature block (its sums, then its dx), one region
      for_features(ctx, [&](std::size_t f0, std::size_t f1) {
        column_block_sums(ctx, p, rows, f0, f1, grad_sums_.data());
        std::copy(grad_sums_.data() + f0, grad_sums_.data() + f1, gamma_.grad.data() + f0);
        std::copy(grad_sums_.data() + n_ + f0, grad_sums_.data() + n_ + f1, beta_.grad.data() + f0);
        if (dx) ctx.kernels.batch_norm_backward(block(gradient, 0, rows, f0, f1));
      });
      return;
    }
    column_sums(ctx, x.rows, 2 * n_, p, grad_sums_.data());
    std::copy_n(grad_sums_.data(), n_, gamma_.grad.data());
    std::copy_n(grad_sums_.data() + n_, n_, beta_.grad.data());
    if (!dx) return;
    for_rows(ctx, rows,
             [&](std::size_t r0, std::size_t r1) { ctx.kernels.batch_norm_backward(block(gradient, r0, r1)); });
  }

 private:
  static constexpr std::size_t chunk_rows = 1024, block_features = 64, npos = ~std::size_t{0};

  // The scale the forward pass multiplies by: gamma, or AP2(gamma) when shift-based.
  const float* refresh_gamma_used() {
    gamma_used_.resize(n_);
    for (std::size_t f = 0; f < n_; ++f) gamma_used_[f] = shift_ ? ap2(gamma_.value[f]) : gamma_.value[f];
    return gamma_used_.data();
  }

  // Calls body(r0, r1, f0, f1, partial) over a fixed grid of chunks of the rows [first, first + rows) x
  // feature blocks, in parallel; `partial` points at the chunk's row of partial_ (`width` floats).
  template <class Body>
  void for_blocks(const step_context& ctx, std::size_t rows, Body&& body, std::size_t first = 0,
                  std::size_t width = 0) {
    const std::size_t chunks = (rows + chunk_rows - 1) / chunk_rows;
    const std::size_t blocks = (n_ + block_features - 1) / block_features;
    partial_.resize(chunks * width);
    auto task = [&](std::size_t t) {
      const std::size_t c = t / blocks, fb = t % blocks;
      body(first + c * chunk_rows, first + std::min(rows, (c + 1) * chunk_rows), fb * block_features,
           std::min(n_, (fb + 1) * block_features), partial_.data() + c * width);
    };
    ctx.rt.parallel_for(chunks * blocks, task);
  }

  // Whether a training pass's rows form one chunk of the sums' grid (and no parts of a split minibatch): then
  // the sums need no reduction across tasks, and a feature block's whole pass is one task (for_features).
  static bool one_chunk(const step_context& ctx, std::size_t rows) { return rows <= chunk_rows && !parts_of(ctx); }
  template <class Body>
  void for_features(const step_context& ctx, Body&& body) const {
    parallel_rows(ctx.rt, n_, block_features, body);
  }
  // The sums of rows [0, rows) x features [f0, f1) of whole.sum into out[f0, f1) (gradients: and out[n_ + f0,
  // n_ + f1)), as for_blocks' one chunk computes them.
  void column_block_sums(const step_context& ctx, const kernels::batch_norm_params& whole, std::size_t rows,
                         std::size_t f0, std::size_t f1, float* out) const {
    kernels::batch_norm_params p = block(whole, 0, rows, f0, f1);
    p.sums = out + f0;
    p.second = n_;
    ctx.kernels.batch_norm_sums(p);
  }

  // The element-wise passes: body(r0, r1) over chunks of whole rows, in parallel (any split gives the same
  // bits; whole rows keep each kernel call on contiguous memory).
  template <class Body>
  void for_rows(const step_context& ctx, std::size_t rows, Body&& body) const {
    parallel_rows(ctx.rt, rows, std::max<std::size_t>(1, 16384 / n_), body);
  }

  // The operands of rows [r0, r1) x features [f0, f1) of the layer's [rows][n_] arrays in `whole`.
  kernels::batch_norm_params block(const kernels::batch_norm_params& whole, std::size_t r0, std::size_t r1,
                                   std::size_t f0 = 0, std::size_t f1 = npos) const {
    if (f1 == npos) f1 = n_;
    auto at = [](auto* array, std::size_t offset) { return array ? array + offset : nullptr; };
    kernels::batch_norm_params p = whole;
    p.rows = r1 - r0;
    p.features = f1 - f0;
    p.ld = n_;
    p.x = at(whole.x, r0 * n_ + f0);
    p.dy = at(whole.dy, r0 * n_ + f0);
    p.out = at(whole.out, r0 * n_ + f0);
    p.mean = at(whole.mean, f0);
    p.inv_std = at(whole.inv_std, f0);
    p.gamma = at(whole.gamma, f0);
    p.beta = at(whole.beta, f0);
    p.gamma_grad = at(whole.gamma_grad, f0);
    p.beta_grad = at(whole.beta_grad, f0);
    return p;
  }

  // out[0, width) = sums over the minibatch of examples [0, examples) of whole.sum (batch_norm_sums; with
  // width 2 n_ the gradients' two sums, the second n_ floats on). Sequential within each chunk of rows, chunks
  // added in order: over the whole batch, or per part of the minibatch, whose sums are then folded in part
  // order (collective.hpp).
  void column_sums(const step_context& ctx, std::size_t examples, std::size_t width,
                   const kernels::batch_norm_params& whole, float* out) {
    sum_over_parts(ctx, examples, width, part_sums_, out,
                   [&](std::size_t e0, std::size_t e1, std::uint64_t, float* sum) {
                     const std::size_t first = e0 * spatial_, rows = (e1 - e0) * spatial_;
                     for_blocks(
                         ctx, rows,
                         [&](std::size_t r0, std::size_t r1, std::size_t f0, std::size_t f1, float* partial) {
                           kernels::batch_norm_params p = block(whole, r0, r1, f0, f1);
                           p.sums = partial + f0;
                           p.second = n_;
                           ctx.kernels.batch_norm_sums(p);
                         },
                         first, width);
                     const std::size_t chunks = (rows + chunk_rows - 1) / chunk_rows;
                     for (std::size_t i = 0; i < width; ++i) sum[i] = partial_[i];
                     for (std::size_t c = 1; c < chunks; ++c)
                       for (std::size_t i = 0; i < width; ++i) sum[i] += partial_[c * width + i];
                   });
  }

  std::size_t n_, spatial_;
  float epsilon_, momentum_;
  bool shift_;
  bool relu_ = false;  // a ReLU absorbed (absorb_next)
  parameter gamma_, beta_;
  std::vector<float> running_mean_, running_var_;
  std::vector<float> expected_mean_, expected_var_;  // empty unless re-estimated under E[Wb]
  std::vector<float> mean_, inv_std_, running_inv_std_, gamma_used_, partial_;
  std::vector<float> grad_sums_, part_sums_;  // [2n]: gamma's and beta's gradients; the parts' sums
};

// Element-wise activations: y = f(x), dx = dy * f'(x).
template <class F, class G>
class elementwise_layer final : public detail::serializable_layer {
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
  bool is_relu() const override { return tag_ == tag_relu; }
  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_width(*this, x);
    y.resize(x.rows, n_);
    // Plain pointers, so the loop vectorizes into a branch-free blend: through the vectors' members the
    // compiler must assume aliasing, and a per-element branch on the sign of a ReLU input mispredicts
    // half the time (it was 5% of a bc+qbp step).
    const float* in = x.data.data();
    float* out = y.data.data();
    const F f = f_;
    parallel_rows(ctx.rt, x.data.size(), 65536, [in, out, f](std::size_t i0, std::size_t i1) {
      const float* src = in;  // locals: a store through out cannot change them
      float* dst = out;
      for (std::size_t i = i0; i < i1; ++i) dst[i] = f(src[i]);
    });
  }
  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    if (!dx) return;
    dx->resize(x.rows, n_);
    const float *in = x.data.data(), *grad = dy.data.data();
    float* out = dx->data.data();
    const G gate = gate_;
    parallel_rows(ctx.rt, x.data.size(), 65536, [in, grad, out, gate](std::size_t i0, std::size_t i1) {
      const float *src = in, *g = grad;
      float* dst = out;
      for (std::size_t i = i0; i < i1; ++i) {
        const float through = g[i];  // loaded unconditionally, so the select needs no branch
        dst[i] = gate(src[i]) ? through : 0.0f;
      }
    });
  }

 private:
  std::uint32_t tag_;
  std::string name_;
  std::size_t n_;
  F f_;
  G gate_;
};

// Sign (1 bit) and k-bit activations with the straight-through estimator.
class quantized_activation_layer final : public detail::serializable_layer {
 public:
  quantized_activation_layer(std::size_t n, int bits, bool stochastic) : n_(n), bits_(bits), stochastic_(stochastic) {
    if (n == 0) throw error("an activation needs a positive size");
    if (bits < 1 || bits > 8) throw error("quantized activations need 1 to 8 bits, not " + std::to_string(bits));
  }
  std::string describe() const override {
    const std::string name = bits_ == 1 ? "sign" : std::to_string(bits_) + "-bit activation";
    return name + (stochastic_ ? "(stochastic) " : " ") + std::to_string(n_);
  }
  std::size_t input_size() const override { return n_; }
  std::size_t output_size() const override { return n_; }
  int output_bits(bool) const override { return bits_; }
  int bits() const { return bits_; }
  op_counts training_ops(std::size_t, bool) const override { return {}; }  // comparisons only
  void write(detail::byte_writer& out, bool packed) const override {
    out.put<std::uint32_t>(bits_ == 1 ? tag_sign : tag_quantized_activation);
    out.put<std::uint64_t>(n_);
    if (bits_ != 1) out.put<std::uint8_t>(static_cast<std::uint8_t>(bits_));
    out.put<std::uint8_t>(packed ? 0 : stochastic_);
  }
  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_width(*this, x);
    y.resize(x.rows, n_);
    const bool sample = stochastic_ && ctx.training;
    const std::uint64_t key = kernels::derive_key(ctx.seed, ctx.step, index, 0x519);
    const std::size_t first = first_row(ctx) * n_;  // counters number the elements of the whole minibatch
    if (bits_ > 1) return forward_levels(x, y, sample, key, first, ctx);
    parallel_rows(ctx.rt, x.data.size(), 65536, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) {
        const float v = x.data[i];
        if (!sample) {
          y.data[i] = v >= 0.0f ? 1.0f : -1.0f;
          continue;
        }
        // P(+1) = hard_sigmoid(v); u uniform in [0, 1) from the counter hash.
        const float p = std::clamp((v + 1.0f) * 0.5f, 0.0f, 1.0f);
        const float u = static_cast<float>(kernels::counter_hash(key, static_cast<std::uint32_t>(first + i)) >> 8) *
                        (1.0f / 16777216.0f);
        y.data[i] = u < p ? 1.0f : -1.0f;
      }
    });
  }
  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    if (!dx) return;
    dx->resize(x.rows, n_);
    parallel_rows(ctx.rt, x.data.size(), 65536, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) dx->data[i] = std::fabs(x.data[i]) <= 1.0f ? dy.data[i] : 0.0f;
    });
  }

 private:
  // k bits: nearest level, or stochastic rounding between the two neighbouring levels.
  void forward_levels(const matrix& x, matrix& y, bool sample, std::uint64_t key, std::size_t first,
                      const step_context& ctx) const {
    const float top = static_cast<float>((1 << bits_) - 1);
    parallel_rows(ctx.rt, x.data.size(), 65536, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) {
        const float v = x.data[i];
        std::uint32_t u = kernels::level_of(v, bits_);
        if (sample) {
          const float c = v >= -1.0f ? (v <= 1.0f ? v : 1.0f) : -1.0f;
          const float r = static_cast<float>(kernels::counter_hash(key, static_cast<std::uint32_t>(first + i)) >> 8) *
                          (1.0f / 16777216.0f);
          const float t = (c + 1.0f) * 0.5f * top + r;
          u = std::min(static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(top));
        }
        y.data[i] = kernels::level_value(u, bits_);
      }
    });
  }

  std::size_t n_;
  int bits_;
  bool stochastic_;
};

// Inverted dropout; at inference the identity, so quantized inputs stay quantized for the next layer.
class dropout_layer final : public detail::serializable_layer {
 public:
  dropout_layer(std::size_t n, float p) : n_(n), p_(p) {
    if (n == 0) throw error("dropout needs a positive size");
    if (!(p >= 0.0f && p < 1.0f)) throw error("dropout probability must lie in [0, 1)");
  }
  std::string describe() const override {
    return "dropout(" + std::to_string(p_).substr(0, 4) + ") " + std::to_string(n_);
  }
  std::size_t input_size() const override { return n_; }
  std::size_t output_size() const override { return n_; }
  int output_bits(bool training) const override { return training && p_ > 0.0f ? 0 : input_bits_; }
  void set_input_bits(int inference_bits, int) override { input_bits_ = inference_bits; }
  op_counts training_ops(std::size_t batch, bool) const override {
    return {static_cast<double>(batch) * static_cast<double>(n_), 0.0, 0.0};  // the 1/(1-p) scale
  }
  void write(detail::byte_writer& out, bool) const override {
    out.put<std::uint32_t>(tag_dropout);
    out.put<std::uint64_t>(n_);
    out.put<float>(p_);
  }
  void forward(const matrix& x, matrix& y, const step_context& ctx) override {
    check_width(*this, x);
    y.resize(x.rows, n_);
    if (!ctx.training || p_ == 0.0f) {
      y.data = x.data;
      return;
    }
    apply_mask(x.data, y.data, ctx);
  }
  void backward(const matrix& x, const matrix&, const matrix& dy, matrix* dx, const step_context& ctx) override {
    if (!dx) return;
    dx->resize(x.rows, n_);
    if (p_ == 0.0f) {
      dx->data = dy.data;
      return;
    }
    // The same mask again, from the same counter hash (y cannot tell a dropped value from a kept 0).
    apply_mask(dy.data, dx->data, ctx);
  }

 private:
  // out = in * mask / (1 - p), the mask drawn from (seed, step, layer, element).
  void apply_mask(const std::vector<float>& in, std::vector<float>& out, const step_context& ctx) const {
    const std::uint64_t key = kernels::derive_key(ctx.seed, ctx.step, index, 0xd20);
    const float scale = 1.0f / (1.0f - p_);
    const auto threshold = static_cast<std::uint32_t>(static_cast<double>(p_) * 4294967296.0);
    const std::size_t first = first_row(ctx) * n_;  // counters number the elements of the whole minibatch
    parallel_rows(ctx.rt, in.size(), 65536, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i)
        out[i] = kernels::counter_hash(key, static_cast<std::uint32_t>(first + i)) < threshold ? 0.0f : in[i] * scale;
    });
  }

  std::size_t n_;
  float p_;
  int input_bits_ = 0;
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
  return std::make_unique<batch_norm_layer>(features, 1, epsilon, momentum, false);
}

std::unique_ptr<layer> make_spatial_batch_norm(std::size_t channels, std::size_t positions, float epsilon,
                                               float momentum) {
  return std::make_unique<batch_norm_layer>(channels, positions, epsilon, momentum, false);
}

std::unique_ptr<layer> make_shift_batch_norm(std::size_t channels, std::size_t positions, float epsilon,
                                             float momentum) {
  return std::make_unique<batch_norm_layer>(channels, positions, epsilon, momentum, true);
}

float ap2(float v) noexcept { return kernels::ap2(v); }

// The layer's inference pass runs this expression as kernels' batch_norm_inference (same order).
float detail::batch_norm_view::apply(std::size_t f, float x) const {
  return gamma[f] * (x - mean[f]) * inv_std[f] + beta[f];
}

std::unique_ptr<layer> make_sign(std::size_t features, bool stochastic) {
  return std::make_unique<quantized_activation_layer>(features, 1, stochastic);
}

std::unique_ptr<layer> make_quantized_activation(std::size_t features, int bits, bool stochastic) {
  return std::make_unique<quantized_activation_layer>(features, bits, stochastic);
}

std::unique_ptr<layer> make_dropout(std::size_t features, float p) {
  return std::make_unique<dropout_layer>(features, p);
}

namespace detail {
const weight_core* dense_weights(const layer& l) {
  const auto* d = dynamic_cast<const dense_layer*>(&l);
  return d ? &d->core() : nullptr;
}
bool batch_norm_inference_view(const layer& l, batch_norm_view& view, bool expected) {
  auto* bn = dynamic_cast<batch_norm_layer*>(const_cast<layer*>(&l));
  if (!bn) return false;
  bn->view(view, expected);
  return true;
}
bool batch_norm_shape(const layer& l, std::size_t& channels, std::size_t& positions, bool& shift) {
  const auto* bn = dynamic_cast<const batch_norm_layer*>(&l);
  if (!bn) return false;
  channels = bn->channels();
  positions = bn->positions();
  shift = bn->shift();
  return true;
}
void set_batch_norm_statistics(layer& l, std::vector<float> mean, std::vector<float> var, bool expected) {
  auto* bn = dynamic_cast<batch_norm_layer*>(&l);
  if (!bn) throw error("layer " + std::to_string(l.index) + " (" + l.describe() + ") is not a batch norm");
  bn->set_statistics(std::move(mean), std::move(var), expected);
}
void clear_expected_batch_norm_statistics(layer& l) {
  if (auto* bn = dynamic_cast<batch_norm_layer*>(&l)) bn->clear_expected_statistics();
}
int activation_bits(const layer& l) {
  const auto* a = dynamic_cast<const quantized_activation_layer*>(&l);
  return a ? a->bits() : 0;
}
bool is_dropout(const layer& l) { return dynamic_cast<const dropout_layer*>(&l) != nullptr; }
}  // namespace detail

std::unique_ptr<layer> make_relu(std::size_t features) {
  return make_elementwise(
      tag_relu, "relu", features, [](float v) { return v > 0.0f ? v : 0.0f; }, [](float v) { return v > 0.0f; });
}

std::unique_ptr<layer> make_hard_tanh(std::size_t features) {
  return make_elementwise(
      tag_hard_tanh, "hardtanh", features, [](float v) { return v < -1.0f  ? -1.0f
                                                                : v > 1.0f ? 1.0f
                                                                           : v; },
      [](float v) { return v >= -1.0f && v <= 1.0f; });
}

const std::vector<detail::layer_type>& detail::layer_types() {
  using detail::byte_reader;
  static const std::vector<layer_type> table = {
      {tag_dense, "dense", [](byte_reader& in, bool packed) { return dense_layer::read(in, packed); }},
      {tag_batch_norm, "batchnorm", [](byte_reader& in, bool) { return batch_norm_layer::read(in, false, false); }},
      {tag_batch_norm_spatial, "batchnorm (per channel)",
       [](byte_reader& in, bool) { return batch_norm_layer::read(in, true, false); }},
      {tag_shift_batch_norm, "shift-based batchnorm",
       [](byte_reader& in, bool) { return batch_norm_layer::read(in, true, true); }},
      {tag_quantized_activation, "k-bit activation",
       [](byte_reader& in, bool) {
         const auto n = in.get<std::uint64_t>("activation size");
         const auto bits = in.get<std::uint8_t>("activation bits");
         const auto stochastic = in.get<std::uint8_t>("activation sampling");
         if (n == 0 || n > (1u << 24) || bits < 2 || bits > 8 || stochastic > 1) in.invalid("bad k-bit activation");
         return make_quantized_activation(n, bits, stochastic != 0);
       }},
      {tag_dropout, "dropout",
       [](byte_reader& in, bool) {
         const auto n = in.get<std::uint64_t>("dropout size");
         const auto p = in.get<float>("dropout probability");
         if (n == 0 || n > (1u << 24) || !(p >= 0.0f && p < 1.0f)) in.invalid("bad dropout layer");
         return make_dropout(n, p);
       }},
      {tag_conv2d, "conv2d", [](byte_reader& in, bool packed) { return read_conv2d(in, packed); }},
      {tag_sign, "sign",
       [](byte_reader& in, bool) {
         const auto n = in.get<std::uint64_t>("activation size");
         const auto stochastic = in.get<std::uint8_t>("sign sampling");
         if (n == 0 || n > (1u << 24) || stochastic > 1) in.invalid("bad sign activation");
         return make_sign(n, stochastic != 0);
       }},
      {tag_max_pool, "maxpool2x2", [](byte_reader& in, bool) { return read_max_pool(in); }},
      {tag_relu, "relu",
       [](byte_reader& in, bool) {
         const auto n = in.get<std::uint64_t>("activation size");
         if (n == 0 || n > (1u << 24)) in.invalid("implausible activation size " + std::to_string(n));
         return make_relu(n);
       }},
      {tag_hard_tanh, "hardtanh",
       [](byte_reader& in, bool) {
         const auto n = in.get<std::uint64_t>("activation size");
         if (n == 0 || n > (1u << 24)) in.invalid("implausible activation size " + std::to_string(n));
         return make_hard_tanh(n);
       }},
  };
  return table;
}

std::unique_ptr<layer> read_layer(detail::byte_reader& in, bool packed) {
  const auto tag = in.get<std::uint32_t>("layer type");
  for (const detail::layer_type& t : detail::layer_types())
    if (t.tag == tag) return t.read(in, packed);
  in.invalid("unknown layer type " + std::to_string(tag));
}

}  // namespace fewmul
