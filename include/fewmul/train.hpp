#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "fewmul/data.hpp"
#include "fewmul/network.hpp"

namespace fewmul {

/// The training methods of the papers.
enum class method {
  fp32,      ///< full-precision weights and gradients
  bc,        ///< BinaryConnect, deterministic sign
  bc_stoch,  ///< BinaryConnect, stochastic P(+1) = (w+1)/2
  tc,        ///< TernaryConnect, stochastic P(sign w) = |w|
  bc_qbp,    ///< stochastic BinaryConnect + quantized backprop
  tc_qbp,    ///< TernaryConnect + quantized backprop
  bnn,       ///< BNN (Hubara et al.): deterministic binary weights and sign activations (XNOR-popcount forward)
  qnn        ///< QNN: k-bit weights (train_config::weight_bits) and k-bit activations, XNOR-popcount on bit planes
};
/// CLI spelling: fp32, bc, bc-stoch, tc, bc+qbp, tc+qbp, bnn, qnn.
std::string_view method_name(method m);
/// Parses method_name(); throws fewmul::error on anything else.
method parse_method(std::string_view name);
/// The dense-layer options a method uses (`weight_bits`: qnn only; 1 gives bnn's binary weights).
dense_options dense_options_for(method m, int qbp_kmin = -4, int qbp_kmax = 3, int weight_bits = 2);

/// The preset learning rate of a method: 0.3 for fp32 (the paper's), 1.0 for binary/ternary weights,
/// whose master weights also get the per-layer scale of lr_scale_kind::binary_connect; bnn and qnn 0.003
/// (with Adam, BNN's optimizer, and lr_scale_kind::binary_net's per-layer scale).
float default_learning_rate(method m);
/// The preset learning rate of a method for a network with convolutions: Lin et al.'s 0.3 for fp32 and the
/// BinaryConnect/TernaryConnect methods (the CLI trains them with batch 100, as their CIFAR-10/SVHN
/// scripts), bnn and qnn as for MLPs.
float default_learning_rate(method m, bool convnet);
/// The preset per-epoch learning-rate factor (train_config::lr_decay) of a method on a dataset: for Lin et
/// al.'s methods on the CIFAR-10 and SVHN convnets their scripts' LR_decay = (LR_fin / LR)^(1 / n_epoch)
/// (paper_preset_for), so an N-epoch run follows the first N epochs of the authors' run; 0 elsewhere (MNIST,
/// bnn, qnn: the continuous cosine of lr_schedule::continuous).
float default_lr_decay(std::string_view dataset, method m);

/// Hidden-layer activation of an MLP.
enum class activation {
  relu,
  hard_tanh,
  sign,      ///< BNN: ±1 outputs with the straight-through estimator; the next binary layer runs XNOR-popcount
  quantized  ///< QNN: k-bit outputs (network_architecture::activation_bits), straight-through estimator
};
/// The activation a method trains with by default: sign for bnn, quantized for qnn, else relu.
activation default_activation(method m);

/// Builds inputs -> hidden... -> outputs, each dense layer followed by batch norm and (except the
/// last) the activation (quantized: 2-bit; use make_network for other widths, dropout or shift BN).
network make_mlp(std::size_t inputs, const std::vector<std::size_t>& hidden, std::size_t outputs,
                 const dense_options& options, activation act, std::uint64_t seed);
/// The MNIST MLP preset of a method: 1024x3 (BinaryConnect), 4096x3 for bnn and qnn (BNN paper), every
/// width multiplied by `width_multiplier` (rounded, at least 1).
std::vector<std::size_t> mlp_preset_hidden(method m, double width_multiplier = 1.0);

/// Layer sizes of a network: optional convolutions over the input image (output channel counts, where 0
/// stands for a 2x2 max-pool), then dense hidden layers, then the output layer. Every weight layer is
/// followed by batch norm and (except the output layer) the activation; a pool sits between its
/// convolution and that convolution's batch norm, as in BinaryConnect's convnets (conv -> pool -> BN ->
/// activation, hantek/BinaryConnect layer.py conv_layer.fprop).
struct network_architecture {
  std::uint32_t height = 28, width = 28, channels = 1;  ///< input image (an MLP sees it flattened)
  std::vector<std::size_t> conv;
  /// Kernel size of each convolution in order (pools not counted); empty: 3 for every one. Even sizes
  /// need valid padding.
  std::vector<std::size_t> conv_kernels;
  bool conv_same_padding = true;  ///< zero padding keeping the map size ("same"); false: "valid"
  /// Lin et al.'s Glorot fan of a convolution followed by a pool: fan_out = filters * k^2 / pool area
  /// (hantek/BinaryConnect layer.py conv_layer.__init__), which sets the binary_connect step scale and
  /// the fp32 start of those layers. False: k^2 (in + out), as BinaryNet's layers.
  bool fan_out_per_pool = false;
  std::vector<std::size_t> hidden{1024, 1024, 1024};
  std::size_t outputs = 10;
  activation act = activation::relu;
  int activation_bits = 2;        ///< bits of activation::quantized
  float dropout_input = 0.0f;     ///< dropout probability on the input (MLPs)
  float dropout_hidden = 0.0f;    ///< dropout probability after every hidden activation
  bool shift_batch_norm = false;  ///< shift-based batch norm (make_shift_batch_norm) everywhere
  std::size_t inputs() const { return std::size_t{height} * width * channels; }
};

/// Builds the network of an architecture; throws fewmul::error on impossible shapes (a pool of a map
/// smaller than 2x2, a pool first, zero sizes).
network make_network(const network_architecture& arch, const dense_options& options, std::uint64_t seed);

/// The CIFAR-10/SVHN convnet of the BNN paper (Hubara et al.), "same"-padded
/// 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-1024FC-1024FC-classes, for images of height x width x channels,
/// every width multiplied by `width_multiplier` (rounded, at least 1). The convnet of bnn and qnn.
network_architecture convnet_preset(std::uint32_t height, std::uint32_t width, std::uint32_t channels,
                                    std::size_t classes, double width_multiplier = 1.0);
/// Lin et al.'s CIFAR-10/SVHN convnet, valid-padded 128C3-128C3-MP2-256C2-256C2-MP2-512C2-512C2-MP2-
/// 1024C2-1024FC-classes with conv -> pool -> BN -> ReLU (hantek/BinaryConnect cifar10.py and svhn.py,
/// DeepCNN; layer.py conv_layer), widths multiplied as in convnet_preset. A 32x32 image reaches the
/// 1024C2 layer as 2x2 and leaves it as 1x1.
network_architecture convnet_lin_preset(std::uint32_t height, std::uint32_t width, std::uint32_t channels,
                                        std::size_t classes, double width_multiplier = 1.0);
/// The convnet of the paper `m` comes from: convnet_preset for bnn and qnn, convnet_lin_preset otherwise.
network_architecture convnet_preset_for(method m, std::uint32_t height, std::uint32_t width, std::uint32_t channels,
                                        std::size_t classes, double width_multiplier = 1.0);

/// The convnet of the paper behind `m` for `dataset`: convnet_lin_preset for Lin et al.'s methods; for bnn
/// and qnn convnet_preset, or on SVHN the BNN paper's 2x64C3-MP2-2x128C3-MP2-2x256C3-MP2-1024FC-1024FC-classes
/// (BinaryNet Train-time/svhn.py).
network_architecture paper_convnet(std::string_view dataset, method m, std::uint32_t height, std::uint32_t width,
                                   std::uint32_t channels, std::size_t classes, double width_multiplier = 1.0);

enum class loss_kind { squared_hinge, softmax_cross_entropy };
/// sgd (optional momentum), adam, adamax, and shift_adamax (Hubara et al., Algorithm 4: AdaMax whose
/// step m / v and learning-rate correction are rounded with AP2, so the update is a shift).
enum class optimizer_kind { sgd, adam, adamax, shift_adamax };

/// The paper a method comes from: its presets (architectures, data, schedules, optimizer) follow it.
enum class method_paper : std::uint8_t {
  lin2016,    ///< Lin, Courbariaux, Memisevic, Bengio (ICLR 2016), hantek/BinaryConnect
  hubara2017  ///< Hubara et al. (JMLR 2017), MatthieuCourbariaux/BinaryNet and itayhubara/BinaryNet
};
/// One row of the method table (methods()): everything that sets a training method apart. Adding a method
/// is one enumerator of `method` plus one row.
struct method_traits {
  method id;
  std::string_view name;  ///< CLI spelling
  method_paper paper;
  weight_kind kind;  ///< qnn: weight_kind::quantized, binary with --wbits 1
  sample_mode training_sampling;
  bool qbp;  ///< quantized backprop of the layer inputs
  lr_scale_kind lr_scale;
  activation default_activation;
  optimizer_kind default_optimizer;
  float mlp_lr, convnet_lr;  ///< preset learning rates (see default_learning_rate)
  std::size_t mlp_hidden;    ///< width of the MNIST MLP's three hidden layers
};
/// The method table, in the order of `method`.
const std::vector<method_traits>& methods();
/// The table's row of m.
const method_traits& traits_of(method m);

/// One row of the papers' training setups: what `--schedule paper` runs for a (dataset, method).
struct paper_preset {
  float lr_start = 0, lr_end = 0;
  std::size_t epochs = 0, batch = 0;
  lr_scale_kind init = lr_scale_kind::binary_connect;  ///< weight start and per-layer step scale
  optimizer_kind optimizer = optimizer_kind::sgd;
  const char* source = "";                            ///< the authors' script the row comes from
  float dropout_input = 0.0f, dropout_hidden = 0.0f;  ///< dropout probabilities of the MLP
};
/// The preset of `dataset` ("mnist", "cifar10" or "svhn") and `m`: Lin et al.'s scripts for fp32 and the
/// BinaryConnect/TernaryConnect methods, Hubara et al.'s for bnn and qnn. Throws fewmul::error on an
/// unknown dataset.
paper_preset paper_preset_for(std::string_view dataset, method m);

/// Mean loss of a batch and dL/d(output). Squared hinge: sum over classes of max(0, 1 - t*y)^2 with
/// t = +1 for the label, -1 otherwise, averaged over examples. Returns the loss; counts errors.
/// `batch_rows` (0: output.rows) is the minibatch's size when `output` holds only some of its rows: the
/// gradient is scaled by 1 / batch_rows and the loss returned is these rows' share of the mean.
float loss_and_gradient(loss_kind kind, const matrix& output, const std::uint8_t* labels, matrix& grad,
                        std::size_t& errors, std::size_t batch_rows = 0);
/// Number of rows whose arg-max differs from the label.
std::size_t count_errors(const matrix& output, const std::uint8_t* labels);

/// How the learning rate moves over a run (train_config::lr_decay > 0 overrides all: lr * lr_decay^(epoch-1)).
enum class lr_schedule : std::uint8_t {
  /// Per epoch, reaching lr/100 at the last epoch: fewmul before issue 15, kept for resuming checkpoints of
  /// format 5 and older (a 2-epoch run spent its second epoch at the floor).
  per_epoch_floor = 0,
  /// The default: per minibatch, a cosine from lr down to lr/100 over the run's steps (lr/100 + (lr -
  /// lr/100) (1 + cos(pi step / steps)) / 2, PyTorch's CosineAnnealingLR with eta_min = lr/100), so the
  /// rate reaches the floor only at the very end and a 2-epoch run spends its first epoch near lr.
  continuous = 1,
  /// The authors' scripts: per epoch, lr * (lr_end / lr)^((epoch - 1) / epochs), i.e. LR_decay =
  /// (LR_fin / LR_start)^(1 / n_epoch) applied after every epoch (hantek/BinaryConnect trainer.py,
  /// MatthieuCourbariaux/BinaryNet Train-time/binary_net.py train()).
  paper = 2
};

/// Everything a training run needs besides the data.
struct train_config {
  method training_method = method::bc_qbp;
  std::size_t epochs = 20;
  std::size_t batch = 200;
  float lr = 0.3f;
  float lr_decay = 0.0f;  ///< per-epoch factor; 0 means: follow `schedule`
  lr_schedule schedule = lr_schedule::continuous;
  float lr_end = 0.0f;  ///< lr_schedule::paper: the rate the decay reaches after the last epoch
  optimizer_kind optimizer = optimizer_kind::sgd;
  float momentum = 0.0f;
  loss_kind loss = loss_kind::squared_hinge;
  std::uint64_t seed = 1;
  int threads = 0;
  std::size_t validation = 10000;  ///< last examples of the training set held out for validation
  int qbp_kmin = -4;
  int qbp_kmax = 3;
  /// Quantized backprop rounded as the authors' code does (qbp_rounding::authors_dense for dense layers,
  /// authors_conv for convolutions) instead of fewmul's unbiased rule.
  bool qbp_authors = false;
  int weight_bits = 2;  ///< qnn: bits per weight (1..8)
  /// Data augmentation of image datasets during training: each example is shifted by up to
  /// `augment_shift` pixels in x and y (zero fill; a random crop of the zero-padded image) and, with
  /// `augment_flip`, mirrored left-right with probability 1/2. Drawn from (seed, step, example).
  std::uint32_t augment_shift = 0;
  bool augment_flip = false;
  /// Test-time batch norm (BinaryConnect's protocol): before every evaluation, each batch-norm layer's
  /// inference statistics are recomputed (reestimate_batch_norm) over the first this many training
  /// examples (validation excluded, no augmentation; all of them when fewer) with the weights that
  /// evaluation runs: E[Wb] for the validation and test errors of stochastic methods, the deterministic
  /// packed weights for test_error_packed and the exported model. 0 keeps the running averages gathered
  /// in training (the behaviour before re-estimation existed).
  std::size_t bn_reestimate_examples = 5000;
  /// Parts each minibatch is cut into, the unit of data-parallel training (collective.hpp): every sum over
  /// the minibatch is summed per part and the parts' sums are added in part order, so the bits depend on
  /// this number, never on how many processes (at most this many) share the parts. 1: one sum over the
  /// whole minibatch.
  std::size_t batch_parts = 1;
};

/// The learning rate of minibatch `batch` (0-based) of epoch `epoch` (1-based) with `batches` minibatches
/// per epoch.
float learning_rate_at(const train_config& config, std::size_t epoch, std::size_t batch, std::size_t batches);

/// The bounds of every training setting, shared by the CLI's flag checks, validate() and the checkpoint
/// reader, so that a value is accepted or refused the same way wherever it comes from.
struct setting_limits {
  static constexpr std::uint64_t epochs_min = 1, epochs_max = 100000;
  static constexpr std::uint64_t batch_min = 2, batch_max = 100000;
  static constexpr double lr_min = 1e-6, lr_max = 1e3;
  static constexpr double lr_decay_min = 0.0, lr_decay_max = 1.0;  // 0: automatic
  static constexpr double lr_end_min = 1e-9;                       // --schedule paper: above 0, at most lr
  static constexpr double momentum_min = 0.0, momentum_max = 0.999;
  static constexpr double dropout_min = 0.0, dropout_max = 0.95;
  static constexpr double width_min = 0.01, width_max = 16.0;
  static constexpr std::uint64_t threads_max = 1024;
  static constexpr std::uint64_t examples_max = 1'000'000'000;  // --validation, --train-limit
  static constexpr std::uint64_t bn_reestimate_max = 100'000'000;
  static constexpr std::uint64_t bits_min = 1, bits_max = 8;  // --wbits, --abits
  static constexpr std::uint64_t augment_shift_max = 16;
  static constexpr std::uint64_t batch_parts_max = 4096;  // --batch-parts (and at most the batch size)
};

/// Why `value` is not a finite number in [min, max] ("" when it is), the bounds printed readably
/// ("must be a number in [1e-06, 1000], not nan").
std::string number_problem(double value, double min, double max);
/// The same for the text of a flag (which must be a number as a whole, without trailing characters).
std::string number_text_problem(std::string_view text, double min, double max);
/// Why the text of a flag is not a whole number in [min, max]: no sign, no fraction, no wrap past 2^64.
std::string whole_text_problem(std::string_view text, std::uint64_t min, std::uint64_t max);

/// Throws fewmul::error naming the CLI flag of the first setting of `config` outside setting_limits (or
/// qbp exponents outside the kernels' range, kmin above kmax).
void validate(const train_config& config);
/// Throws fewmul::error naming the CLI flag of a dropout probability or activation bit count out of range.
void validate(const network_architecture& architecture);

/// Metrics of one finished epoch (errors are fractions in [0, 1]).
struct epoch_metrics {
  std::size_t epoch = 0;
  double loss = 0, train_error = 0, validation_error = 0, test_error = 0;
  /// Test error with the deterministic binary/ternary weights (equals test_error for fp32 and for
  /// deterministic methods; for stochastic methods test_error uses E[Wb], the papers' protocol).
  double test_error_packed = 0;
  double lr = 0, seconds = 0, images_per_second = 0;
  bool best = false;  ///< validation error improved at this epoch
};

/// Result of a training run; the network holds the best-on-validation parameters.
struct train_result {
  std::vector<epoch_metrics> epochs;
  std::size_t best_epoch = 0;
  double best_validation_error = 1, test_error_at_best = 1, test_error_packed_at_best = 1;
  double total_seconds = 0;
  /// Seconds this train() call spent in batch-norm re-estimation (included in the epochs' seconds; not
  /// kept in checkpoints).
  double bn_reestimate_seconds = 0;
};

/// What train() needs to continue a run bit-identically from the end of an epoch.
struct training_state {
  std::vector<std::vector<float>> network_state;    ///< network::snapshot() after the epoch
  std::vector<std::vector<float>> optimizer_state;  ///< optimizer moments
  std::int64_t optimizer_steps = 0;
  std::uint64_t step = 0;                      ///< minibatches done
  train_result progress;                       ///< epochs done so far, best epoch
  std::vector<std::vector<float>> best_state;  ///< snapshot of the best-on-validation epoch
  /// Training examples of the run (after --train-limit and the validation split), so that a resume on
  /// other data is refused; 0 where unknown (checkpoints before format version 5).
  std::uint64_t train_examples = 0;
};

/// Progress callbacks: after each minibatch (done, total), after each epoch, and with the state to
/// checkpoint after each epoch.
struct train_observer {
  std::function<void(std::size_t, std::size_t)> on_batch;
  std::function<void(const epoch_metrics&)> on_epoch;
  std::function<void(const training_state&)> on_state;
};

/// Asks a running train() to stop after the current minibatch (async-signal-safe, for SIGINT);
/// train() then throws fewmul::error saying so. Checkpoints already written stay intact.
void request_stop() noexcept;

/// Trains `net` on `train` (the last config.validation examples held out), evaluates on `test` each
/// epoch, and leaves the best-on-validation parameters in `net`. Same seed => same result, whatever the
/// thread count or ISA. Throws fewmul::error on bad configuration or a non-finite loss.
/// With `processes` (collective.hpp; null: this process alone), every process runs train() on the same data
/// and settings, computes its share of config.batch_parts parts of each minibatch, and all of them end with
/// the same bits as one process would; only rank 0 should write files (the observer is called on every rank).
train_result train(network& net, const dataset& train, const dataset& test, const train_config& config,
                   const train_observer& observer = {}, const training_state* resume = nullptr,
                   collective* processes = nullptr);

/// Test-time batch-norm re-estimation: sets every batch-norm layer's inference mean and variance to the
/// exact population statistics (variance over N, not N - 1) of its input over the first `examples`
/// examples of `data` (0: all), with the network in inference mode and the test-time weights: E[Wb] with
/// `expected_weights`, else the deterministic weights a packed model runs. Layer by layer in order, so
/// each layer's statistics are those of the input it gets once the layers before it use their new
/// statistics (BinaryConnect's exact variant, hantek/BinaryConnect trainer.py set_mean_var). Without
/// `expected_weights` the running statistics are replaced (what model files hold); with it the
/// statistics are kept apart in each layer and used only by inference with expected_weights. Same
/// data => same bits for any thread count. Layer inputs are kept between layers within `cache_bytes` and
/// recomputed from the data beyond it (same result, more time). Throws fewmul::error on a size mismatch.
/// With `processes` (collective.hpp), every process of a data-parallel run calls it and each works on a share
/// of the examples; all end with the single-process statistics.
void reestimate_batch_norm(network& net, const dataset& data, const runtime& rt, bool expected_weights,
                           std::size_t examples = 0, std::size_t cache_bytes = std::size_t{256} << 20,
                           collective* processes = nullptr);
/// Drops the E[Wb] statistics of reestimate_batch_norm: inference with expected_weights then uses the
/// running statistics again.
void clear_expected_batch_norm(network& net);

/// Counts of floor(log2|x|) of one layer's input values (clamped to [min_exponent, max_exponent]).
struct layer_exponents {
  std::string layer;  ///< "layer 3 input (dense 1024->1024 ...)"
  int min_exponent = -24, max_exponent = 8;
  std::uint64_t zeros = 0;            ///< exact zeros (ReLU), which have no exponent
  std::vector<std::uint64_t> counts;  ///< counts[e - min_exponent]
};
/// The exponent histogram of the input of every dense and convolution layer over the first `examples`
/// of `data` (0: all), in inference mode with the deterministic weights; changes no state of `net`.
std::vector<layer_exponents> exponent_histogram(network& net, const dataset& data, const runtime& rt,
                                                std::size_t examples = 0);
/// Writes `layers` as JSON: {"epoch", "method", "layers": [{"layer", "zeros", "min_exponent", "counts"}]}.
/// Throws fewmul::error when the file cannot be written.
void write_exponent_histogram(const std::string& path, const std::vector<layer_exponents>& layers, std::size_t epoch,
                              std::string_view method);

/// Error rate of `net` on `data` in inference mode; `expected_weights` as in step_context.
double evaluate(network& net, const dataset& data, const runtime& rt, bool expected_weights = false,
                std::size_t batch = 1000);

}  // namespace fewmul
