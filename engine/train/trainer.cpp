#include <atomic>
#include <bit>
#include <charconv>
#include <cstdio>
#include <chrono>
#include <cmath>
#include <numeric>
#include <string>

#include "fewmul/error.hpp"
#include "fewmul/train.hpp"
#include "model/architecture.hpp"
#include "train/optimizer.hpp"
#include "runtime/parallel_gemm.hpp"

namespace fewmul {
namespace {

// Fisher-Yates with the counter hash, so the order is the same on every platform and library.
void shuffle(std::vector<std::uint32_t>& order, std::uint64_t key) {
  for (std::size_t i = order.size(); i > 1; --i) {
    const std::uint64_t r = (std::uint64_t{kernels::counter_hash(key, static_cast<std::uint32_t>(2 * i))} << 32) |
                            kernels::counter_hash(key, static_cast<std::uint32_t>(2 * i + 1));
    std::swap(order[i - 1], order[r % i]);
  }
}

std::atomic<bool> stop_requested{false};

void gather(const dataset& data, const std::uint32_t* indices, std::size_t count, matrix& x,
            std::vector<std::uint8_t>& y) {
  x.resize(count, data.features);
  y.resize(count);
  for (std::size_t b = 0; b < count; ++b) {
    std::copy_n(data.example(indices[b]), data.features, x.row(b));
    y[b] = data.y[indices[b]];
  }
}

// Shifts (zero fill) and mirrors each channel-last image of the batch in place, drawn per example.
// `first_row`: the row of the whole minibatch that x's row 0 is (the draws are numbered by it).
void augment(matrix& x, const dataset& data, const train_config& config, std::uint64_t step, std::size_t first_row,
             const runtime& rt) {
  const std::size_t h = data.height, w = data.width, c = data.channels;
  const long shift = static_cast<long>(config.augment_shift);
  const std::uint64_t key = kernels::derive_key(config.seed, step, 0xa06);
  detail::parallel_rows(rt, x.rows, 8, [&](std::size_t b0, std::size_t b1) {
    std::vector<float> image(h * w * c);
    for (std::size_t b = b0; b < b1; ++b) {
      const std::uint32_t r = kernels::counter_hash(key, static_cast<std::uint32_t>(first_row + b));
      const long span = 2 * shift + 1;
      const long dy = static_cast<long>(r % static_cast<std::uint32_t>(span)) - shift;
      const long dx = static_cast<long>((r >> 8) % static_cast<std::uint32_t>(span)) - shift;
      const bool flip = config.augment_flip && ((r >> 31) & 1u);
      float* row = x.row(b);
      std::copy_n(row, image.size(), image.begin());
      for (std::size_t yy = 0; yy < h; ++yy)
        for (std::size_t xx = 0; xx < w; ++xx) {
          const long sy = static_cast<long>(yy) + dy;
          const long sx0 = static_cast<long>(flip ? w - 1 - xx : xx) + dx;
          float* out = row + (yy * w + xx) * c;
          if (sy < 0 || sx0 < 0 || sy >= static_cast<long>(h) || sx0 >= static_cast<long>(w)) {
            std::fill_n(out, c, 0.0f);
            continue;
          }
          std::copy_n(image.data() + (static_cast<std::size_t>(sy) * w + static_cast<std::size_t>(sx0)) * c, c, out);
        }
    }
  });
}

// The minibatch's loss and dL/d(output) over this process's rows: per part, the parts' losses then added in
// part order and the errors summed over the processes (collective.hpp), so every process gets the same.
struct split_loss_scratch {
  matrix out, grad;
  std::vector<float> losses;
};
float split_loss_and_gradient(loss_kind kind, const matrix& out, const std::uint8_t* labels, matrix& grad,
                              std::size_t& errors, const batch_split& split, split_loss_scratch& scratch) {
  if (split.whole()) return loss_and_gradient(kind, out, labels, grad, errors);
  grad.resize(out.rows, out.cols);
  matrix &part_out = scratch.out, &part_grad = scratch.grad;
  std::vector<float>& losses = scratch.losses;
  losses.resize(split.local_parts());
  std::uint64_t error_count = 0;
  for (std::size_t i = 0; i < split.local_parts(); ++i) {
    const std::size_t r0 = split.bounds[i], r1 = split.bounds[i + 1];
    part_out.resize(r1 - r0, out.cols);
    std::copy(out.row(r0), out.row(r0) + (r1 - r0) * out.cols, part_out.data.begin());
    std::size_t part_errors = 0;
    losses[i] = loss_and_gradient(kind, part_out, labels + r0, part_grad, part_errors, split.batch_rows);
    std::copy(part_grad.data.begin(), part_grad.data.end(), grad.row(r0));
    error_count += part_errors;
  }
  float loss = 0;
  split.fold(losses.data(), 1, &loss);
  split.comm->sum(split.comm->context, &error_count, 1);
  errors = static_cast<std::size_t>(error_count);
  return loss;
}

// A fingerprint of what every process of a data-parallel run must share: its data and the settings that shape
// the arithmetic (one multiply-xor pass over the bits).
std::uint64_t fingerprint(const dataset& train_set, const dataset& test, const train_config& config) {
  std::uint64_t h = 0x9e3779b97f4a7c15ull;
  auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 0x100000001b3ull + (h >> 29); };
  for (const dataset* d : {&train_set, &test}) {
    mix(d->size());
    mix(d->features);
    for (std::size_t i = 0; i < d->size() * d->features; ++i) mix(std::bit_cast<std::uint32_t>(d->rows()[i]));
    for (std::uint8_t label : d->y) mix(label);
  }
  for (std::uint64_t v : {config.seed, std::uint64_t{config.batch}, std::uint64_t{config.batch_parts},
                          std::uint64_t{config.epochs}, static_cast<std::uint64_t>(config.training_method)})
    mix(v);
  return h;
}

// Refuses to train when the processes do not hold the same data and settings (another file on some node, a
// different command line), which would otherwise train silently wrong.
void check_same_inputs(const dataset& train_set, const dataset& test, const train_config& config, collective& comm) {
  if (comm.size == 1) return;
  const std::uint64_t mine = fingerprint(train_set, test, config);
  std::vector<std::uint64_t> all(static_cast<std::size_t>(comm.size));
  comm.gather_parts(comm.context, &mine, all.size(), sizeof mine, all.data());
  for (std::size_t q = 1; q < all.size(); ++q)
    if (all[q] != all[0])
      throw error("process " + std::to_string(q) + " of " + std::to_string(comm.size) +
                  " holds other training/test data or settings than process 0 (the same files and flags on every "
                  "node?)");
}

// This process's parts of every minibatch of `batch` rows (the same for every step).
batch_split split_batch(collective& comm, std::size_t parts, std::size_t batch) {
  batch_split s;
  s.comm = &comm;
  s.parts = parts;
  s.first_part = first_part(parts, comm.rank, comm.size);
  s.first_row = part_begin(batch, parts, s.first_part);
  s.batch_rows = batch;
  const std::size_t count = local_parts(parts, comm.rank, comm.size);
  for (std::size_t i = 0; i <= count; ++i) s.bounds.push_back(part_begin(batch, parts, s.first_part + i) - s.first_row);
  return s;
}

std::unique_ptr<layer> make_activation(activation act, std::size_t n, int bits) {
  switch (act) {
    case activation::relu:
      return make_relu(n);
    case activation::hard_tanh:
      return make_hard_tanh(n);
    case activation::sign:
      return make_sign(n);
    case activation::quantized:
      return bits == 1 ? make_sign(n) : make_quantized_activation(n, bits);
  }
  throw error("unknown activation");
}

void check_finite_parameters(network& net, std::size_t epoch) {
  for (const auto& l : net.layers())
    for (parameter* p : l->parameters())
      for (float v : p->value)
        if (!std::isfinite(v))
          throw error("parameter " + p->name + " of layer " + std::to_string(l->index) + " (" + l->describe() +
                      ") became non-finite in epoch " + std::to_string(epoch));
}

// Throws "<flag> <problem>" when there is a problem.
void require(std::string_view flag, const std::string& problem) {
  if (!problem.empty()) throw error(std::string(flag) + " " + problem);
}

std::string whole_problem(std::uint64_t value, std::uint64_t min, std::uint64_t max) {
  if (value >= min && value <= max) return {};
  return "must be a whole number in [" + std::to_string(min) + ", " + std::to_string(max) + "], not " +
         std::to_string(value);
}

}  // namespace

std::string number_problem(double value, double min, double max) {
  if (std::isfinite(value) && value >= min && value <= max) return {};
  char text[160];
  std::snprintf(text, sizeof text, "must be a number in [%g, %g], not %g", min, max, value);
  return text;
}

std::string number_text_problem(std::string_view text, double min, double max) {
  const std::string copy(text);
  char* end = nullptr;
  const double value = copy.empty() ? 0.0 : std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size()) return "must be a number, not '" + copy + "'";
  return number_problem(value, min, max);
}

std::string whole_text_problem(std::string_view text, std::uint64_t min, std::uint64_t max) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    std::string bound = "[" + std::to_string(min) + ", " + std::to_string(max) + "]";
    return "must be a whole number in " + bound + ", not '" + std::string(text) + "'";
  }
  return whole_problem(value, min, max);
}

void validate(const train_config& c) {
  using L = setting_limits;
  require("--epochs", whole_problem(c.epochs, L::epochs_min, L::epochs_max));
  require("--batch", whole_problem(c.batch, L::batch_min, L::batch_max));
  require("--lr", number_problem(c.lr, L::lr_min, L::lr_max));
  require("--lr-decay", number_problem(c.lr_decay, L::lr_decay_min, L::lr_decay_max));
  require("--momentum", number_problem(c.momentum, L::momentum_min, L::momentum_max));
  if (c.threads < 0 || static_cast<std::uint64_t>(c.threads) > L::threads_max)
    throw error("--threads must be a whole number in [0, " + std::to_string(L::threads_max) + "], not " +
                std::to_string(c.threads));
  require("--validation", whole_problem(c.validation, 0, L::examples_max));
  const auto exponent = [](int k) { return k >= kernels::pow2_min_exponent && k <= kernels::pow2_max_exponent; };
  if (!exponent(c.qbp_kmin) || !exponent(c.qbp_kmax) || c.qbp_kmin > c.qbp_kmax)
    throw error("--qbp-kmin and --qbp-kmax must lie in [" + std::to_string(kernels::pow2_min_exponent) + ", " +
                std::to_string(kernels::pow2_max_exponent) + "] with kmin <= kmax, not " + std::to_string(c.qbp_kmin) +
                " and " + std::to_string(c.qbp_kmax));
  if (c.qbp_authors && c.qbp_kmax >= kernels::pow2_max_exponent)
    throw error("--qbp-authors rounds convolution inputs up to 2^(kmax + 1): --qbp-kmax must be below " +
                std::to_string(kernels::pow2_max_exponent));
  if (c.weight_bits < 1 || c.weight_bits > 8)
    throw error("--wbits must be a whole number in [1, 8], not " + std::to_string(c.weight_bits));
  require("--augment-shift", whole_problem(c.augment_shift, 0, L::augment_shift_max));
  require("--bn-reestimate", whole_problem(c.bn_reestimate_examples, 0, L::bn_reestimate_max));
  require("--batch-parts", whole_problem(c.batch_parts, 1, std::min<std::uint64_t>(L::batch_parts_max, c.batch)));
  if (c.schedule > lr_schedule::paper) throw error("--schedule: unknown learning-rate schedule");
  // The paper schedule decays towards lr_end; the others ignore it, but a stored value still has to be a number.
  require("--lr-end", c.schedule == lr_schedule::paper ? number_problem(c.lr_end, L::lr_end_min, c.lr)
                                                       : number_problem(c.lr_end, 0.0, L::lr_max));
}

float learning_rate_at(const train_config& c, std::size_t epoch, std::size_t batch, std::size_t batches) {
  const double e = static_cast<double>(epoch - 1), epochs = static_cast<double>(c.epochs);
  if (c.lr_decay > 0.0f) return static_cast<float>(c.lr * std::pow(static_cast<double>(c.lr_decay), e));
  switch (c.schedule) {
    case lr_schedule::per_epoch_floor:
      // float arithmetic as before issue 15, so that resumed old checkpoints continue bit-identically
      return c.epochs > 1 ? c.lr * std::pow(std::pow(0.01f, 1.0f / static_cast<float>(c.epochs - 1)),
                                            static_cast<float>(epoch - 1))
                          : c.lr;
    case lr_schedule::paper:
      return static_cast<float>(c.lr * std::pow(static_cast<double>(c.lr_end) / c.lr, e / epochs));
    case lr_schedule::continuous:
    default: {
      // Cosine from lr to lr/100 over the run's minibatches (PyTorch's CosineAnnealingLR, eta_min = lr/100).
      // An exponential curve to the same floor spent too little of a short run at a useful rate: CIFAR-10
      // fp32, width 0.25, 22,500 images, 1 epoch of 2: 55.8% test error, 42.0% at a constant rate.
      const double steps = epochs * static_cast<double>(std::max<std::size_t>(1, batches));
      const double t = e * static_cast<double>(batches) + static_cast<double>(batch);
      const double pi = std::acos(-1.0), floor = 0.01 * c.lr;
      return static_cast<float>(floor + (c.lr - floor) * 0.5 * (1.0 + std::cos(pi * t / steps)));
    }
  }
}

// The papers' setups, one row per (dataset, group of methods). Lin et al.'s scripts are the same on the
// binary, ternary and precise branches of hantek/BinaryConnect (only the BinaryConnect/stochastic
// switches differ), so fp32 and every BinaryConnect/TernaryConnect method share a row. The QNN paper's
// Torch code (itayhubara/BinaryNet) has no per-dataset scripts in this form: qnn uses BinaryNet's.
namespace {
struct preset_row {
  const char* dataset;
  bool binary_net;  // bnn and qnn (Hubara et al.), else Lin et al.
  paper_preset preset;
};
constexpr lr_scale_kind lin_init = lr_scale_kind::binary_connect, bnn_init = lr_scale_kind::binary_net;
const preset_row paper_presets[] = {
    // hantek/BinaryConnect mnist.py: LR = .3, LR_fin = .01, n_epoch = 1000, batch_size = 200, M = 0.
    {"mnist", false, {0.3f, 0.01f, 1000, 200, lin_init, optimizer_kind::sgd, "hantek/BinaryConnect mnist.py"}},
    // hantek/BinaryConnect cifar10.py: LR = .3, LR_fin = .001, n_epoch = 300, batch_size = 100, M = 0.
    {"cifar10", false, {0.3f, 0.001f, 300, 100, lin_init, optimizer_kind::sgd, "hantek/BinaryConnect cifar10.py"}},
    // hantek/BinaryConnect svhn.py: LR = .3, LR_fin = .001, n_epoch = 60, batch_size = 100, M = 0.
    {"svhn", false, {0.3f, 0.001f, 60, 100, lin_init, optimizer_kind::sgd, "hantek/BinaryConnect svhn.py"}},
    // MatthieuCourbariaux/BinaryNet Train-time/mnist.py: LR_start = .003, LR_fin = 0.0000003,
    // num_epochs = 1000, batch_size = 100, H = 1., W_LR_scale = "Glorot", lasagne.updates.adam,
    // dropout_in = .2, dropout_hidden = .5.
    {"mnist",
     true,
     {0.003f, 3e-7f, 1000, 100, bnn_init, optimizer_kind::adam, "BinaryNet Train-time/mnist.py", 0.2f, 0.5f}},
    // Train-time/cifar10.py: LR_start = 0.001, LR_fin = 0.0000003, num_epochs = 500, batch_size = 50.
    {"cifar10", true, {0.001f, 3e-7f, 500, 50, bnn_init, optimizer_kind::adam, "BinaryNet Train-time/cifar10.py"}},
    // Train-time/svhn.py: LR_start = 0.001, LR_fin = 0.000001, num_epochs = 200, batch_size = 50.
    {"svhn", true, {0.001f, 1e-6f, 200, 50, bnn_init, optimizer_kind::adam, "BinaryNet Train-time/svhn.py"}},
};
}  // namespace

paper_preset paper_preset_for(std::string_view dataset, method m) {
  const bool binary_net = traits_of(m).paper == method_paper::hubara2017;
  for (const preset_row& row : paper_presets)
    if (row.dataset == dataset && row.binary_net == binary_net) return row.preset;
  throw error("no paper preset for dataset '" + std::string(dataset) + "' (expected mnist, cifar10 or svhn)");
}

float default_lr_decay(std::string_view dataset, method m) {
  // Lin et al.'s convnet scripts decay the rate once per epoch by LR_decay = (LR_fin / LR)^(1 / n_epoch)
  // (hantek/BinaryConnect cifar10.py: 0.3 -> 0.001 over 300 epochs, 0.981 per epoch; svhn.py: over 60,
  // 0.908; trainer.py update(): self.LR *= self.LR_decay after each epoch), so a run at their factor is the
  // start of theirs: a 2-epoch CIFAR-10 run stays near 0.3. The cosine to lr/100 over the run halved a
  // 2-epoch run's mean rate, and the stochastic binary weights need the steps: CIFAR-10, width 0.25, 2
  // epochs, full set, bc-stoch seeds 1 and 2: 49.3% and 51.9% test error with the cosine, 45.1% and 40.9% at
  // the authors' factor. Deterministic and ternary weights, which gain from the cosine's annealing, lose
  // 3.7-6.8 points there and stay at 32-35% (issue 15, README). MNIST keeps the cosine (its default rate and batch
  // are not Lin et al.'s), and so do bnn and qnn (Adam, Hubara et al.).
  if (dataset == "mnist" || traits_of(m).paper != method_paper::lin2016) return 0.0f;
  const paper_preset p = paper_preset_for(dataset, m);
  return static_cast<float>(std::pow(static_cast<double>(p.lr_end) / p.lr_start, 1.0 / static_cast<double>(p.epochs)));
}

void validate(const network_architecture& a) {
  using L = setting_limits;
  require("--dropout-input", number_problem(a.dropout_input, L::dropout_min, L::dropout_max));
  require("--dropout-hidden", number_problem(a.dropout_hidden, L::dropout_min, L::dropout_max));
  if (a.activation_bits < 1 || a.activation_bits > 8)
    throw error("--abits must be a whole number in [1, 8], not " + std::to_string(a.activation_bits));
}

void request_stop() noexcept { stop_requested.store(true); }

const std::vector<method_traits>& methods() {
  using kernels::sample_mode;
  constexpr auto lin = method_paper::lin2016, hubara = method_paper::hubara2017;
  constexpr auto sgd = optimizer_kind::sgd, adam = optimizer_kind::adam;
  constexpr auto lin_scale = lr_scale_kind::binary_connect, bnn_scale = lr_scale_kind::binary_net;
  // Learning rates: fp32 0.3 (Lin et al.'s); binary/ternary 1.0 on MLPs, whose master weights also get the
  // per-layer scale of lr_scale_kind::binary_connect, and Lin et al.'s 0.3 on convnets (hantek/BinaryConnect
  // cifar10.py, svhn.py; with the authors' start it beats the 0.1 tuned for the older U(+-1) start: CIFAR-10
  // bc-stoch, width 0.25, 2 epochs, batch 100: 31.7% test error at 0.3, 55.7% at 0.1); bnn and qnn 0.003 with
  // Adam (MatthieuCourbariaux/BinaryNet Train-time/mnist.py LR_start). Hidden widths: 1024 (Lin et al.'s
  // MNIST MLP), 4096 (the BNN paper's).
  static const std::vector<method_traits> table = {
      {method::fp32, "fp32", lin, weight_kind::fp32, sample_mode::deterministic, false, lin_scale, activation::relu,
       sgd, 0.3f, 0.3f, 1024},
      {method::bc, "bc", lin, weight_kind::binary, sample_mode::deterministic, false, lin_scale, activation::relu, sgd,
       1.0f, 0.3f, 1024},
      {method::bc_stoch, "bc-stoch", lin, weight_kind::binary, sample_mode::stochastic, false, lin_scale,
       activation::relu, sgd, 1.0f, 0.3f, 1024},
      {method::tc, "tc", lin, weight_kind::ternary, sample_mode::stochastic, false, lin_scale, activation::relu, sgd,
       1.0f, 0.3f, 1024},
      {method::bc_qbp, "bc+qbp", lin, weight_kind::binary, sample_mode::stochastic, true, lin_scale, activation::relu,
       sgd, 1.0f, 0.3f, 1024},
      {method::tc_qbp, "tc+qbp", lin, weight_kind::ternary, sample_mode::stochastic, true, lin_scale, activation::relu,
       sgd, 1.0f, 0.3f, 1024},
      {method::bnn, "bnn", hubara, weight_kind::binary, sample_mode::deterministic, false, bnn_scale, activation::sign,
       adam, 0.003f, 0.003f, 4096},
      {method::qnn, "qnn", hubara, weight_kind::quantized, sample_mode::deterministic, false, bnn_scale,
       activation::quantized, adam, 0.003f, 0.003f, 4096},
  };
  return table;
}

const method_traits& traits_of(method m) {
  const auto& table = methods();
  const auto i = static_cast<std::size_t>(m);
  if (i >= table.size() || table[i].id != m) throw error("unknown method " + std::to_string(i));
  return table[i];
}

std::string_view method_name(method m) {
  const auto i = static_cast<std::size_t>(m);
  return i < methods().size() ? methods()[i].name : std::string_view("unknown");
}

method parse_method(std::string_view name) {
  std::string names;
  for (const method_traits& t : methods()) {
    if (t.name == name) return t.id;
    names += (names.empty() ? "" : ", ") + std::string(t.name);
  }
  throw error("unknown method '" + std::string(name) + "' (expected " + names + ")");
}

float default_learning_rate(method m) { return traits_of(m).mlp_lr; }

activation default_activation(method m) { return traits_of(m).default_activation; }

float default_learning_rate(method m, bool convnet) { return convnet ? traits_of(m).convnet_lr : traits_of(m).mlp_lr; }

namespace {
// A preset's layer width n times --width, rounded, at least 1.
std::size_t scaled_width(double n, double width_multiplier) {
  if (!(width_multiplier > 0.0) || width_multiplier > 16.0) throw error("--width must lie in (0, 16]");
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(n * width_multiplier)));
}
// A convnet preset's input image and classes, before its layers.
network_architecture convnet_input(std::uint32_t height, std::uint32_t width, std::uint32_t channels,
                                   std::size_t classes) {
  network_architecture a;
  a.height = height;
  a.width = width;
  a.channels = channels;
  a.outputs = classes;
  return a;
}
}  // namespace

std::vector<std::size_t> mlp_preset_hidden(method m, double width_multiplier) {
  const std::size_t n = scaled_width(static_cast<double>(traits_of(m).mlp_hidden), width_multiplier);
  return {n, n, n};
}

dense_options dense_options_for(method m, int qbp_kmin, int qbp_kmax, int weight_bits) {
  const method_traits& t = traits_of(m);
  dense_options o;
  o.qbp_kmin = qbp_kmin;
  o.qbp_kmax = qbp_kmax;
  o.kind = t.kind;
  o.training_sampling = t.training_sampling;
  o.lr_scale = t.lr_scale;
  o.qbp = t.qbp;
  if (t.kind == weight_kind::quantized) {  // qnn: --wbits bits per weight, binary for 1
    if (weight_bits < 1 || weight_bits > 8) throw error("--wbits must lie in 1..8, not " + std::to_string(weight_bits));
    o.kind = weight_bits == 1 ? weight_kind::binary : weight_kind::quantized;
    o.weight_bits = weight_bits == 1 ? 2 : weight_bits;
  }
  return o;
}

network make_mlp(std::size_t inputs, const std::vector<std::size_t>& hidden, std::size_t outputs,
                 const dense_options& options, activation act, std::uint64_t seed) {
  network_architecture arch;
  arch.height = 1;
  arch.width = static_cast<std::uint32_t>(inputs);
  arch.channels = 1;
  arch.hidden = hidden;
  arch.outputs = outputs;
  arch.act = act;
  return make_network(arch, options, seed);
}

network make_network(const network_architecture& arch, const dense_options& options, std::uint64_t seed) {
  validate(arch);
  const std::vector<detail::planned_block> blocks = detail::plan_network(arch);
  dense_options conv_options = options;  // the authors round a convolution's inputs by their own rule
  if (options.qbp_round == qbp_rounding::authors_dense) conv_options.qbp_round = qbp_rounding::authors_conv;
  network net;
  if (arch.dropout_input > 0.0f) net.add(make_dropout(arch.inputs(), arch.dropout_input));
  for (const detail::planned_block& b : blocks) {
    if (b.convolution) {
      net.add(make_conv2d(b.conv, conv_options, kernels::derive_key(seed, 0xc0, b.key_index)));
      if (b.pool) net.add(make_max_pool(b.conv.out_height(), b.conv.out_width(), b.channels));
    } else {
      net.add(make_dense(b.inputs, b.outputs, options, kernels::derive_key(seed, 0xde, b.key_index)));
    }
    net.add(arch.shift_batch_norm ? make_shift_batch_norm(b.channels, b.positions)
            : b.positions == 1    ? make_batch_norm(b.channels)
                                  : make_spatial_batch_norm(b.channels, b.positions));
    if (b.output_layer) continue;
    const std::size_t n = b.channels * b.positions;
    net.add(make_activation(arch.act, n, arch.activation_bits));
    if (arch.dropout_hidden > 0.0f) net.add(make_dropout(n, arch.dropout_hidden));
  }
  return net;
}

network_architecture convnet_preset(std::uint32_t height, std::uint32_t width, std::uint32_t channels,
                                    std::size_t classes, double width_multiplier) {
  auto scaled = [&](double n) { return scaled_width(n, width_multiplier); };
  network_architecture a = convnet_input(height, width, channels, classes);
  a.conv = {scaled(128), scaled(128), 0, scaled(256), scaled(256), 0, scaled(512), scaled(512), 0};
  a.hidden = {scaled(1024), scaled(1024)};
  return a;
}

network_architecture convnet_lin_preset(std::uint32_t height, std::uint32_t width, std::uint32_t channels,
                                        std::size_t classes, double width_multiplier) {
  auto scaled = [&](double n) { return scaled_width(n, width_multiplier); };
  network_architecture a = convnet_input(height, width, channels, classes);
  // hantek/BinaryConnect cifar10.py and svhn.py (DeepCNN, identical on the binary, ternary and precise
  // branches): ReLU_conv_layer filter_shape (128, 3, 3, 3) and (128, 128, 3, 3) with pool_shape (2, 2) on
  // the second; (256, ., 2, 2) twice, pooled; (512, ., 2, 2) twice, pooled; (1024, 512, 2, 2) unpooled;
  // ReLU_layer 1024 -> 1024; linear_layer 1024 -> 10 (the L2-SVM output), BN on every layer. layer.py
  // conv_layer.fprop: T.nnet.conv.conv2d(..., border_mode='valid'), then max_pool_2d, then BN, then the
  // activation; n_units = filters * k^2 / pool area in the Glorot bound of the start.
  a.conv = {scaled(128), scaled(128), 0, scaled(256), scaled(256), 0, scaled(512), scaled(512), 0, scaled(1024)};
  a.conv_kernels = {3, 3, 2, 2, 2, 2, 2};
  a.conv_same_padding = false;
  a.fan_out_per_pool = true;
  a.hidden = {scaled(1024)};
  return a;
}

network_architecture convnet_preset_for(method m, std::uint32_t height, std::uint32_t width, std::uint32_t channels,
                                        std::size_t classes, double width_multiplier) {
  return traits_of(m).paper == method_paper::hubara2017
             ? convnet_preset(height, width, channels, classes, width_multiplier)
             : convnet_lin_preset(height, width, channels, classes, width_multiplier);
}

network_architecture paper_convnet(std::string_view dataset, method m, std::uint32_t height, std::uint32_t width,
                                   std::uint32_t channels, std::size_t classes, double width_multiplier) {
  if (traits_of(m).paper == method_paper::lin2016)
    return convnet_lin_preset(height, width, channels, classes, width_multiplier);
  network_architecture a = convnet_preset(height, width, channels, classes, width_multiplier);
  // BinaryNet Train-time/svhn.py: num_filters 64, 64, 128, 128, 256, 256 (cifar10.py: 128 ... 512), the
  // same 1024-1024 dense layers.
  if (dataset == "svhn") {
    auto scaled = [&](double n) { return scaled_width(n, width_multiplier); };
    a.conv = {scaled(64), scaled(64), 0, scaled(128), scaled(128), 0, scaled(256), scaled(256), 0};
  }
  return a;
}

namespace {
// Errors of inference over examples [begin, end) of `data`, `batch` at a time. Rows are independent in
// inference, so the count does not depend on how the examples are grouped.
std::size_t count_errors_in(network& net, const dataset& data, std::size_t begin, std::size_t end, const runtime& rt,
                            bool expected_weights, std::size_t batch) {
  const step_context ctx{.rt = rt,
                         .kernels = kernels::active_kernels(),
                         .seed = 0,
                         .step = 0,
                         .training = false,
                         .expected_weights = expected_weights};
  matrix x;
  std::size_t errors = 0;
  for (std::size_t first = begin; first < end; first += batch) {
    const std::size_t count = std::min(batch, end - first);
    x.resize(count, data.features);
    std::copy_n(data.example(first), count * data.features, x.data.data());
    errors += count_errors(net.forward(x, ctx), data.y.data() + first);
  }
  return errors;
}

// evaluate() with the examples shared among the processes of a data-parallel run: each counts the errors of
// its share and the counts are summed (exact), so every process gets the single-process error rate.
double evaluate_shared(network& net, const dataset& data, const runtime& rt, bool expected_weights, collective& comm) {
  if (comm.size == 1) return evaluate(net, data, rt, expected_weights);
  if (data.size() == 0) return 0.0;
  const std::size_t n = data.size(), ranks = static_cast<std::size_t>(comm.size);
  const std::size_t rank = static_cast<std::size_t>(comm.rank);
  std::uint64_t errors =
      count_errors_in(net, data, n * rank / ranks, n * (rank + 1) / ranks, rt, expected_weights, 1000);
  comm.sum(comm.context, &errors, 1);
  return static_cast<double>(errors) / static_cast<double>(n);
}
}  // namespace

double evaluate(network& net, const dataset& data, const runtime& rt, bool expected_weights, std::size_t batch) {
  if (data.size() == 0) return 0.0;
  const std::size_t errors = count_errors_in(net, data, 0, data.size(), rt, expected_weights, batch);
  return static_cast<double>(errors) / static_cast<double>(data.size());
}

namespace {

using steady_clock = std::chrono::steady_clock;

double seconds_since(steady_clock::time_point t0) {
  return std::chrono::duration<double>(steady_clock::now() - t0).count();
}

// Throws unless the network, the data, the configuration and the processes fit together; returns the number
// of training examples (the last config.validation examples of train_set are the validation split).
std::size_t check_run(const network& net, const dataset& train_set, const train_config& config,
                      const collective& comm) {
  validate(config);
  if (static_cast<std::size_t>(comm.size) > config.batch_parts)
    throw error("--batch-parts " + std::to_string(config.batch_parts) + " is fewer than the " +
                std::to_string(comm.size) + " processes of this run (each needs a part); give at least " +
                std::to_string(comm.size));
  if (train_set.features != net.input_size())
    throw error("training data has " + std::to_string(train_set.features) + " features, the network expects " +
                std::to_string(net.input_size()));
  if (config.validation >= train_set.size())
    throw error("validation split of " + std::to_string(config.validation) + " leaves no training data (" +
                std::to_string(train_set.size()) + " examples)");
  const std::size_t train_count = train_set.size() - config.validation;
  if (train_count < config.batch)
    throw error("only " + std::to_string(train_count) + " training examples for a batch of " +
                std::to_string(config.batch));
  const bool augmenting = config.augment_shift > 0 || config.augment_flip;
  if (augmenting && (train_set.height == 0 || train_set.width == 0 || train_set.channels == 0 ||
                     std::size_t{train_set.height} * train_set.width * train_set.channels != train_set.features))
    throw error("data augmentation needs an image dataset (height, width and channels)");
  return train_count;
}

// One call of train(): what lives across its epochs, and the steps of an epoch.
class training_run {
 public:
  training_run(network& net, const dataset& train_set, const dataset& test, const train_config& config,
               const train_observer& observer, collective& comm, std::size_t train_count)
      : net_(net),
        train_set_(train_set),
        test_(test),
        config_(config),
        observer_(observer),
        comm_(comm),
        train_count_(train_count),
        batches_(train_count / config.batch),  // the remainder is dropped each epoch
        validation_(train_set.slice(train_count, config.validation)),
        rt_(config.threads),
        opt_(config.optimizer, config.momentum, net.parameters()),
        order_(train_count) {
    check_same_inputs(train_set, test, config, comm);
    split_ = split_batch(comm, config.batch_parts, config.batch);
    split_.defer_gradient_folds = true;  // opt_ folds the weight gradients in its update pass
  }

  // Everything random derives from (seed, epoch, step), so restoring the parameters, the optimizer and the
  // counters continues the run exactly as if it had not stopped.
  void resume(const training_state& state) {
    net_.restore(state.network_state);
    opt_.restore(state.optimizer_state, state.optimizer_steps);
    result_ = state.progress;
    result_.bn_reestimate_seconds = 0;
    best_state_ = state.best_state;
    step_ = state.step;
    first_epoch_ = result_.epochs.size() + 1;
    earlier_seconds_ = result_.total_seconds;
    if (state.train_examples != 0 && state.train_examples != train_count_)
      throw error("checkpoint was written for " + std::to_string(state.train_examples) +
                  " training examples, this run has " + std::to_string(train_count_) +
                  " (--train-limit or --validation differ from the checkpoint's run)");
    if (step_ != result_.epochs.size() * batches_)
      throw error("checkpoint was written with a different batch size or training set size");
  }

  train_result run() {
    const auto run_start = steady_clock::now();
    if (!reestimating_) clear_expected_batch_norm(net_);  // E[Wb] inference uses the running statistics
    for (std::size_t epoch = first_epoch_; epoch <= config_.epochs; ++epoch) {
      const auto start = steady_clock::now();
      epoch_metrics m = train_epoch(epoch, start);
      measure(m);
      m.seconds = seconds_since(start);
      keep_if_best(m);
      result_.epochs.push_back(m);
      result_.total_seconds = earlier_seconds_ + seconds_since(run_start);
      if (observer_.on_epoch) observer_.on_epoch(m);
      if (observer_.on_state)
        observer_.on_state(
            training_state{net_.snapshot(), opt_.state(), opt_.steps(), step_, result_, best_state_, train_count_});
    }
    if (!best_state_.empty()) net_.restore(best_state_);
    // The snapshot holds the deterministic weights' statistics; E[Wb] inference of the returned network
    // needs its own again (the same bits as at the best epoch: same weights, same data).
    if (reestimating_ && stochastic_) reestimate(true);
    return result_;
  }

 private:
  // The minibatches of one epoch in a fresh shuffle: the epoch's loss, training error and throughput.
  epoch_metrics train_epoch(std::size_t epoch, steady_clock::time_point start) {
    std::iota(order_.begin(), order_.end(), 0u);
    shuffle(order_, kernels::derive_key(config_.seed, 0x5f, epoch));
    double loss_sum = 0.0;
    std::size_t errors = 0;
    for (std::size_t b = 0; b < batches_; ++b, ++step_) train_minibatch(epoch, b, loss_sum, errors);
    opt_.gather_slices();  // every process's parameters whole again (before checks, evaluation and files)
    check_finite_parameters(net_, epoch);
    const double train_seconds = seconds_since(start);
    epoch_metrics m;
    m.epoch = epoch;
    m.loss = loss_sum / static_cast<double>(batches_);
    m.train_error = static_cast<double>(errors) / static_cast<double>(batches_ * config_.batch);
    m.images_per_second = static_cast<double>(batches_ * config_.batch) / train_seconds;
    return m;
  }

  // Minibatch b of the epoch: this process's rows forward, the loss and its gradient, backward, one
  // optimizer step.
  void train_minibatch(std::size_t epoch, std::size_t b, double& loss_sum, std::size_t& errors) {
    gather(train_set_, order_.data() + b * config_.batch + split_.first_row, split_.bounds.back(), x_, y_);
    if (augmenting_) augment(x_, train_set_, config_, step_, split_.first_row, rt_);
    const step_context ctx{.rt = rt_,
                           .kernels = k_,
                           .seed = config_.seed,
                           .step = step_,
                           .training = true,
                           .expected_weights = false,
                           .split = &split_};
    float loss = 0;
    std::size_t batch_errors = 0;
    try {
      const matrix& out = net_.forward(x_, ctx);
      loss = split_loss_and_gradient(config_.loss, out, y_.data(), grad_, batch_errors, split_, loss_scratch_);
      if (!std::isfinite(loss)) throw error("loss became non-finite (try a smaller --lr)");
      net_.backward(grad_, ctx);
    } catch (const error& e) {
      throw error(std::string(e.what()) + " in epoch " + std::to_string(epoch) + ", minibatch " +
                  std::to_string(b + 1) + (epoch > 1 ? "; checkpoints of earlier epochs are intact" : ""));
    }
    loss_sum += loss;
    errors += batch_errors;
    opt_.step(learning_rate_at(config_, epoch, b, batches_), rt_, k_, &split_);
    net_.parameters_changed();
    if (observer_.on_batch) observer_.on_batch(b + 1, batches_);
    if (stop_requested.load())
      throw error("interrupted in epoch " + std::to_string(epoch) + "; the last checkpoint (end of epoch " +
                  std::to_string(epoch - 1) + ") is intact");
  }

  // Stochastic methods are validated and tested with E[Wb] and, for test_error_packed, the deterministic
  // weights; each gets batch-norm statistics re-estimated with its own weights. The deterministic ones land
  // last, in the running statistics, so that snapshots, checkpoints and exported models hold the statistics
  // of the weights a packed model deploys.
  void measure(epoch_metrics& m) {
    if (reestimating_) reestimate(stochastic_);
    m.validation_error = evaluate_shared(net_, validation_, rt_, stochastic_, comm_);
    m.test_error = evaluate_shared(net_, test_, rt_, stochastic_, comm_);
    if (reestimating_ && stochastic_) reestimate(false);
    m.test_error_packed = stochastic_ ? evaluate_shared(net_, test_, rt_, false, comm_) : m.test_error;
    m.lr = learning_rate_at(config_, m.epoch, 0, batches_);
  }

  void keep_if_best(epoch_metrics& m) {
    const bool improved = m.validation_error < result_.best_validation_error;
    if (m.epoch != 1 && config_.validation != 0 && !improved) return;
    m.best = true;
    result_.best_epoch = m.epoch;
    result_.best_validation_error = m.validation_error;
    result_.test_error_at_best = m.test_error;
    result_.test_error_packed_at_best = m.test_error_packed;
    best_state_ = net_.snapshot();
  }

  void reestimate(bool expected_weights) {
    const auto t0 = steady_clock::now();
    reestimate_batch_norm(net_, reestimate_set_, rt_, expected_weights, 0, std::size_t{256} << 20, &comm_);
    result_.bn_reestimate_seconds += seconds_since(t0);
  }

  network& net_;
  const dataset& train_set_;
  const dataset& test_;
  const train_config& config_;
  const train_observer& observer_;
  collective& comm_;
  const std::size_t train_count_, batches_;
  const dataset validation_;
  const bool augmenting_ = config_.augment_shift > 0 || config_.augment_flip;
  const bool stochastic_ =
      dense_options_for(config_.training_method).training_sampling == kernels::sample_mode::stochastic;
  // Re-estimation data: the first training examples, not augmented (BinaryConnect: "not on the DA
  // training set because no DA on valid and test").
  const bool reestimating_ = config_.bn_reestimate_examples > 0;
  const dataset reestimate_set_ =
      reestimating_ ? train_set_.slice(0, std::min(config_.bn_reestimate_examples, train_count_)) : dataset{};
  runtime rt_;
  const kernels::kernel_table& k_ = kernels::active_kernels();
  detail::optimizer opt_;
  std::vector<std::uint32_t> order_;
  batch_split split_;
  matrix x_, grad_;
  std::vector<std::uint8_t> y_;
  split_loss_scratch loss_scratch_;
  train_result result_;
  std::vector<std::vector<float>> best_state_;
  std::uint64_t step_ = 0;
  std::size_t first_epoch_ = 1;
  double earlier_seconds_ = 0;
};

}  // namespace

train_result train(network& net, const dataset& train_set, const dataset& test, const train_config& config,
                   const train_observer& observer, const training_state* resume, collective* processes) {
  stop_requested.store(false);
  collective& comm = processes != nullptr ? *processes : single_process();
  training_run run(net, train_set, test, config, observer, comm, check_run(net, train_set, config, comm));
  if (resume != nullptr) run.resume(*resume);
  return run.run();
}

}  // namespace fewmul
