// fewmul train: flags, the checkpoint/resume rules and the training run.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include "cli_common.hpp"
#if FEWMUL_MPI
#include "dist/mpi_job.hpp"
#endif

namespace fewmul_cli {
namespace {

struct train_flags {
  std::string dataset = "mnist";
  std::string method_text = "bc+qbp";
  std::size_t epochs = 20;
  std::size_t batch = 200;
  float lr = 0.0f;  // 0: the method's preset
  float lr_decay = 0.0f;
  std::string schedule_text = "continuous";
  std::string histogram_path;
  std::string optimizer_text = "sgd";
  float momentum = 0.0f;
  std::string loss_text = "hinge";
  std::string activation_text = "relu";
  std::uint64_t seed = 1;
  int threads = 0;
  std::size_t validation = 0;  // given only when --validation is
  std::size_t train_limit = 0;
  int qbp_kmin = -4;
  int qbp_kmax = 3;
  bool qbp_authors = false;
  std::string data_dir;     // default: build/data/<dataset>
  std::string hidden_text;  // empty: the method's preset (mlp_preset_hidden)
  double width = 1.0;
  std::string convnet_text = "auto";  // auto: the convnet of the paper the method comes from
  int weight_bits = 2, activation_bits = 2;
  float dropout_input = 0.0f, dropout_hidden = 0.0f;
  bool shift_bn = false;
  std::string preprocess_text = "auto";
  std::uint32_t augment_shift = 0;
  bool augment_flip = false;
  bool svhn_extra = false;
  std::size_t bn_reestimate = fewmul::train_config{}.bn_reestimate_examples;
  std::string checkpoint_path;
  std::string resume_path;
  std::string save_model_path;
  bool quiet = false;
  std::size_t batch_parts = 1;
};

// Validation examples held out when --validation is not given: MNIST 10000 (of 60000), CIFAR-10 5000
// (45k/5k), SVHN 6000 as in the papers (10% for small files such as the test fixtures).
std::size_t default_validation(const std::string& dataset, std::size_t train_size) {
  if (dataset == "mnist") return std::min<std::size_t>(10000, train_size / 6);
  if (dataset == "cifar10") return std::min<std::size_t>(5000, train_size / 10);
  return train_size >= 60000 ? 6000 : train_size / 10;
}

void print_epoch(const fewmul::epoch_metrics& m, const std::string& method) {
  std::printf(
      "{\"epoch\": %zu, \"method\": \"%s\", \"loss\": %.6f, \"train_error\": %.4f, \"val_error\": %.4f, "
      "\"test_error\": %.4f, \"test_error_packed\": %.4f, \"lr\": %.6g, \"seconds\": %.2f, \"images_per_s\": %.0f, "
      "\"best\": %s}\n",
      m.epoch, method.c_str(), m.loss, m.train_error, m.validation_error, m.test_error, m.test_error_packed, m.lr,
      m.seconds, m.images_per_second, m.best ? "true" : "false");
  std::fflush(stdout);
}

fewmul::optimizer_kind parse_optimizer(const std::string& text) {
  if (text == "adam") return fewmul::optimizer_kind::adam;
  if (text == "adamax") return fewmul::optimizer_kind::adamax;
  if (text == "shift-adamax") return fewmul::optimizer_kind::shift_adamax;
  return fewmul::optimizer_kind::sgd;
}

std::string hidden_text(const std::vector<std::size_t>& hidden) {
  std::string text;
  for (std::size_t h : hidden) text += (text.empty() ? "" : ",") + std::to_string(h);
  return text;
}

std::string number_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

// The checkpoint fixes the run: a flag given with --resume must agree with it, except those that may
// change (--epochs to extend it, --threads, --train-limit and --data to find the same data again, the
// outputs, --quiet). Refuses naming the flag, its value and the checkpoint's.
void check_resume_flags(const train_flags& f, const CLI::App& train, const fewmul::checkpoint& c) {
  const std::string& path = f.resume_path;
  auto given = [&](const char* flag) { return train.count(flag) > 0; };
  auto agree = [&](const char* flag, const std::string& value, const std::string& stored) {
    if (given(flag) && value != stored)
      throw fewmul::error(std::string(flag) + " " + value + " contradicts " + path + ", a run with " + flag + " " +
                          stored + " (give only --epochs, --threads, --data, --train-limit and outputs with --resume)");
  };
  const fewmul::train_config& k = c.config;
  const fewmul::network_architecture& a = c.architecture;
  agree("--method", f.method_text, std::string(fewmul::method_name(k.training_method)));
  agree("--batch", std::to_string(f.batch), std::to_string(k.batch));
  agree("--lr", number_text(f.lr), number_text(k.lr));
  agree("--lr-decay", number_text(f.lr_decay), number_text(k.lr_decay));
  const char* schedules[] = {"per-epoch-floor", "continuous", "paper"};
  agree("--schedule", f.schedule_text, schedules[static_cast<int>(k.schedule)]);
  agree("--momentum", number_text(f.momentum), number_text(k.momentum));
  agree("--seed", std::to_string(f.seed), std::to_string(k.seed));
  agree("--validation", std::to_string(f.validation), std::to_string(k.validation));
  agree("--qbp-kmin", std::to_string(f.qbp_kmin), std::to_string(k.qbp_kmin));
  agree("--qbp-kmax", std::to_string(f.qbp_kmax), std::to_string(k.qbp_kmax));
  agree("--wbits", std::to_string(f.weight_bits), std::to_string(k.weight_bits));
  agree("--abits", std::to_string(f.activation_bits), std::to_string(a.activation_bits));
  agree("--dropout-input", number_text(f.dropout_input), number_text(a.dropout_input));
  agree("--dropout-hidden", number_text(f.dropout_hidden), number_text(a.dropout_hidden));
  agree("--augment-shift", std::to_string(f.augment_shift), std::to_string(k.augment_shift));
  agree("--bn-reestimate", std::to_string(f.bn_reestimate), std::to_string(k.bn_reestimate_examples));
  agree("--batch-parts", std::to_string(f.batch_parts), std::to_string(k.batch_parts));
  agree("--loss", f.loss_text, k.loss == fewmul::loss_kind::softmax_cross_entropy ? "xent" : "hinge");
  const char* optimizers[] = {"sgd", "adam", "adamax", "shift-adamax"};
  agree("--optimizer", f.optimizer_text, optimizers[static_cast<int>(k.optimizer)]);
  const char* activations[] = {"relu", "hardtanh", "sign", "quantized"};
  agree("--activation", f.activation_text, activations[static_cast<int>(a.act)]);
  if (given("--hidden")) agree("--hidden", hidden_text(parse_hidden(f.hidden_text)), hidden_text(a.hidden));
  auto on_off = [](bool b) { return std::string(b ? "on" : "off"); };
  agree("--augment-flip", on_off(f.augment_flip), on_off(k.augment_flip));
  agree("--qbp-authors", on_off(f.qbp_authors), on_off(k.qbp_authors));
  agree("--shift-bn", on_off(f.shift_bn), on_off(a.shift_batch_norm));
  for (const char* fixed : {"--width", "--convnet", "--preprocess", "--svhn-extra"})
    if (given(fixed))
      throw fewmul::error(std::string(fixed) + " cannot be given with --resume: " + path +
                          " fixes the network, the preprocessing and the data");
  const std::size_t done = c.state.progress.epochs.size();
  if (given("--epochs") && f.epochs < done)
    throw fewmul::error("--epochs " + std::to_string(f.epochs) + " is fewer than the " + std::to_string(done) +
                        " epochs " + path + " has done already");
}

// The processes of an `mpirun -n R fewmul train` job (null when not started by an MPI launcher, or built
// without MPI): every process trains, rank 0 alone checks and writes the outputs and prints.
fewmul::collective* join_job() {
#if FEWMUL_MPI
  return fewmul::dist::join_mpi_job();
#else
  for (const char* launcher : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(launcher) != nullptr) {
      std::fprintf(stderr,
                   "fewmul: warning: started by an MPI launcher, but this fewmul was built without MPI "
                   "(FEWMUL_MPI=OFF): every process trains alone\n");
      break;
    }
  return nullptr;
#endif
}

// The hardware threads of this node divided among the job's processes on it (at least 1).
int fair_share_of_threads() {
#if FEWMUL_MPI
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, hardware / fewmul::dist::processes_on_this_node());
#else
  return 0;
#endif
}

// Whether this process loads the data: outside a job yes, in a job the first process of each node.
bool first_on_node(const fewmul::collective* job) {
#if FEWMUL_MPI
  return job == nullptr || fewmul::dist::first_on_node();
#else
  (void)job;
  return true;
#endif
}

int processes_on_node(const fewmul::collective* job) {
#if FEWMUL_MPI
  return job == nullptr ? 1 : fewmul::dist::processes_on_this_node();
#else
  (void)job;
  return 1;
#endif
}

// In a job: the data that the first process of the node loaded, shared by the node's processes (one copy of
// the rows in shared memory; tests/mpi/run.sh counts the "loaded" lines, one per node).
void share_data_on_node(const fewmul::collective* job, const std::string& dataset, loaded_data& data) {
#if FEWMUL_MPI
  if (job == nullptr) return;
  const bool first = fewmul::dist::first_on_node();
  const std::size_t bytes = fewmul::dist::share_on_node({&data.train, &data.test});
  if (first)
    std::fprintf(stderr, "fewmul: rank %d loaded %s once for the %d processes of its node (%.1f MB shared)\n",
                 job->rank, dataset.c_str(), fewmul::dist::processes_on_this_node(), static_cast<double>(bytes) / 1e6);
  else
    data.meta = metadata_of(dataset, data.test);
#else
  (void)job;
  (void)dataset;
  (void)data;
#endif
}

// In a job: waits until the node's first process has preprocessed the shared rows in place.
void data_ready_on_node(const fewmul::collective* job) {
#if FEWMUL_MPI
  if (job != nullptr) fewmul::dist::node_barrier();
#else
  (void)job;
#endif
}

// In a job: every process's memory after the run, printed by rank 0 (bench/mpi_scaling.sh and
// tests/mpi/run.sh read it: the shared data counts in no process's private memory).
void print_job_memory(const fewmul::collective* job) {
#if FEWMUL_MPI
  if (job == nullptr) return;
  const std::vector<fewmul::dist::memory_use> all = fewmul::dist::memory_of_processes();
  if (job->rank != 0) return;
  std::string text;
  for (std::size_t q = 0; q < all.size(); ++q) {
    char one[96];
    std::snprintf(one, sizeof one, "%s rank %zu %.1f / %.1f", q == 0 ? "" : ",", q,
                  static_cast<double>(all[q].private_bytes) / 1e6, static_cast<double>(all[q].resident_bytes) / 1e6);
    text += one;
  }
  std::fprintf(stderr, "fewmul: memory per process, private / resident MB:%s\n", text.c_str());
#else
  (void)job;
#endif
}

// Where the collectives of an MPI job spent their time (rank 0's view), after the run.
void print_job_traffic(const fewmul::collective* job, std::uint64_t steps) {
#if FEWMUL_MPI
  if (job == nullptr) return;
  const fewmul::dist::traffic t = fewmul::dist::job_traffic();
  std::fprintf(stderr,
               "fewmul: %d processes: %.0f collectives and %.2f MB sent, %.2f MB received per step (rank 0), "
               "%.2f s in collectives\n",
               job->size, static_cast<double>(t.calls) / static_cast<double>(std::max<std::uint64_t>(1, steps)),
               static_cast<double>(t.bytes_sent) / 1e6 / static_cast<double>(std::max<std::uint64_t>(1, steps)),
               static_cast<double>(t.bytes_received) / 1e6 / static_cast<double>(std::max<std::uint64_t>(1, steps)),
               t.seconds);
#else
  (void)job;
  (void)steps;
#endif
}

// FEWMUL_TEST_FAIL_RANK=r (tests only): process r of a job throws at the second minibatch of the run's last
// epoch, so that a test can see a failing process end the whole job with a message and the checkpoint of the
// epoch before intact. FEWMUL_TEST_STALL_RANK=r: process r stops there without a word (the others' watchdog).
bool injected(const char* variable, const fewmul::collective* job) {
  const char* rank = std::getenv(variable);
  return rank != nullptr && job != nullptr && std::to_string(job->rank) == rank;
}

// Which flags the command line gave (a flag left out takes the preset of the method or paper).
struct given_flags {
  const CLI::App& train;
  bool operator()(const char* flag) const { return train.count(flag) > 0; }
};

// Outputs first: a path that cannot or must not be written is found before hours of training. Only rank 0
// writes, so only it claims the paths.
struct output_locks {
  std::unique_ptr<fewmul::output_lock> checkpoint, model;
};
output_locks claim_outputs(const train_flags& f, bool rank0) {
  if (!f.checkpoint_path.empty() && !f.save_model_path.empty() && same_file(f.checkpoint_path, f.save_model_path))
    throw fewmul::error("--save-model " + f.save_model_path + " names the same file as --checkpoint " +
                        f.checkpoint_path);
  if (!f.resume_path.empty() && !f.save_model_path.empty() && same_file(f.resume_path, f.save_model_path))
    throw fewmul::error("--save-model " + f.save_model_path + " is the checkpoint this run resumes from (--resume)");
  output_locks locks;
  if (!rank0) return locks;
  if (!f.checkpoint_path.empty()) {
    check_output(f.checkpoint_path, fewmul::file_kind::checkpoint, "--checkpoint");
    locks.checkpoint = std::make_unique<fewmul::output_lock>(f.checkpoint_path, "--checkpoint");
  }
  if (!f.save_model_path.empty()) {
    check_output(f.save_model_path, fewmul::file_kind::model, "--save-model");
    locks.model = std::make_unique<fewmul::output_lock>(f.save_model_path, "--save-model");
  }
  if (!f.histogram_path.empty()) {  // found before training, as the other outputs
    const bool existed = std::filesystem::exists(f.histogram_path);
    if (!std::ofstream(f.histogram_path, std::ios::app))
      throw fewmul::error("--histogram " + f.histogram_path + ": cannot write there");
    if (!existed) std::filesystem::remove(f.histogram_path);
  }
  return locks;
}

// A new run's training settings: the flags given, else the presets of the method, dataset and paper. Returns
// the paper preset's dropout (applied unless the dropout flags are given) through `paper_dropout`.
fewmul::train_config configure_training(const train_flags& f, const given_flags& given, const std::string& dataset,
                                        std::size_t train_size, int threads, std::pair<float, float>& paper_dropout) {
  fewmul::train_config config;
  config.training_method = fewmul::parse_method(f.method_text);
  config.epochs = f.epochs;
  // Convnets of Lin et al.'s methods: their batch 100 (hantek/BinaryConnect cifar10.py, svhn.py).
  const fewmul::method_traits& traits = fewmul::traits_of(config.training_method);
  const bool lin_convnet = dataset != "mnist" && traits.paper == fewmul::method_paper::lin2016;
  config.batch = lin_convnet && !given("--batch") ? 100 : f.batch;
  config.lr = f.lr > 0.0f ? f.lr : fewmul::default_learning_rate(config.training_method, dataset != "mnist");
  // Lin et al.'s convnets: their per-epoch factor unless a schedule or factor is asked for (default_lr_decay).
  config.lr_decay = given("--lr-decay") || given("--schedule")
                        ? f.lr_decay
                        : fewmul::default_lr_decay(dataset, config.training_method);
  // The method's optimizer unless told otherwise (BNN and QNN: Adam, Hubara et al.).
  config.optimizer = !given("--optimizer") ? traits.default_optimizer : parse_optimizer(f.optimizer_text);
  paper_dropout = {0.0f, 0.0f};
  if (f.schedule_text == "paper") {
    // The authors' setup of this dataset and method; flags given explicitly still win.
    const fewmul::paper_preset p = fewmul::paper_preset_for(dataset, config.training_method);
    config.schedule = fewmul::lr_schedule::paper;
    config.lr = f.lr > 0.0f ? f.lr : p.lr_start;
    config.lr_end = std::min(p.lr_end, config.lr);
    if (!given("--epochs")) config.epochs = p.epochs;
    if (!given("--batch")) config.batch = p.batch;
    if (!given("--optimizer")) config.optimizer = p.optimizer;
    paper_dropout = {p.dropout_input, p.dropout_hidden};
    std::fprintf(stderr, "fewmul: paper schedule (%s): lr %g -> %g over %zu epochs, batch %zu, dropout %g/%g\n",
                 p.source, config.lr, config.lr_end, config.epochs, config.batch, p.dropout_input, p.dropout_hidden);
  }
  config.weight_bits = f.weight_bits;
  config.momentum = f.momentum;
  config.loss = f.loss_text == "xent" ? fewmul::loss_kind::softmax_cross_entropy : fewmul::loss_kind::squared_hinge;
  config.seed = f.seed;
  config.threads = threads;
  config.validation = given("--validation") ? f.validation : default_validation(dataset, train_size);
  config.qbp_kmin = f.qbp_kmin;
  config.qbp_kmax = f.qbp_kmax;
  config.qbp_authors = f.qbp_authors;
  config.augment_shift = f.augment_shift;
  config.augment_flip = f.augment_flip;
  config.bn_reestimate_examples = f.bn_reestimate;
  config.batch_parts = f.batch_parts;
  return config;
}

// A new run's network: the MNIST MLP or the convnet of the method's paper, with the activation, dropout and
// batch-norm flags.
fewmul::network_architecture configure_architecture(const train_flags& f, const given_flags& given,
                                                    const std::string& dataset, const fewmul::model_metadata& m,
                                                    fewmul::method method, std::pair<float, float> paper_dropout) {
  fewmul::network_architecture a;
  if (dataset == "mnist") {
    a.hidden = f.hidden_text.empty() ? fewmul::mlp_preset_hidden(method, f.width) : parse_hidden(f.hidden_text);
  } else {
    // Lin et al.'s valid-padded net for fp32 and the BinaryConnect methods, the BNN paper's for bnn and qnn
    // (its SVHN variant with 64/128/256 filters on SVHN).
    const fewmul::method net_method = f.convnet_text == "lin"   ? fewmul::method::bc
                                      : f.convnet_text == "bnn" ? fewmul::method::bnn
                                                                : method;
    a = fewmul::paper_convnet(dataset, net_method, m.height, m.width, m.channels, 10, f.width);
  }
  a.height = m.height;
  a.width = m.width;
  a.channels = m.channels;
  a.act = !given("--activation")             ? fewmul::default_activation(method)
          : f.activation_text == "hardtanh"  ? fewmul::activation::hard_tanh
          : f.activation_text == "sign"      ? fewmul::activation::sign
          : f.activation_text == "quantized" ? fewmul::activation::quantized
                                             : fewmul::activation::relu;
  a.activation_bits = f.activation_bits;
  a.dropout_input = given("--dropout-input") ? f.dropout_input : paper_dropout.first;
  a.dropout_hidden = given("--dropout-hidden") ? f.dropout_hidden : paper_dropout.second;
  a.shift_batch_norm = f.shift_bn;
  return a;
}

// Preprocessing as in the papers, fitted on the training examples only (not the validation split).
// MNIST: Lin et al. centre it (hantek/BinaryConnect mnist.py: pylearn2 MNIST(center = True)); BinaryNet
// scales it to [-1, 1] (Train-time/mnist.py), a constant shift the batch norm after the first layer
// removes, so none. CIFAR-10: GCN (scale 55) + ZCA, pylearn2's make_cifar10_gcn_whitened.py, both
// papers. SVHN: Lin et al.'s GCN (pylearn2's default scale 1) + LeCun LCN (hantek/BinaryConnect
// svhn_preprocessing.py). BNN and QNN convnets: inputs in [-1, 1], no GCN or ZCA (BinaryNet
// Train-time/cifar10.py, svhn.py: 2/255 X - 1).
fewmul::preprocessing fit_run_preprocessing(const train_flags& f, const std::string& dataset, bool lin_method,
                                            const fewmul::dataset& train, std::size_t validation,
                                            const fewmul::runtime& rt, bool rank0) {
  std::string pre = f.preprocess_text;
  if (pre == "auto" && !lin_method && dataset != "mnist") pre = "pm1";
  if (pre == "auto")
    pre = dataset == "cifar10" ? "gcn+zca" : dataset == "svhn" ? "gcn+lcn" : lin_method ? "center" : "none";
  fewmul::preprocessing fitted;
  if (pre == "none") return fitted;
  if (pre == "pm1") {
    fitted.pm1 = true;
    return fitted;
  }
  if (validation >= train.size())
    throw fewmul::error("validation split of " + std::to_string(validation) + " leaves no training data");
  fewmul::preprocessing_options o;
  o.center = pre == "center";
  o.gcn = pre != "center";
  o.zca = pre == "gcn+zca";
  // ZCA regularizer 0.1: pylearn2's ZCA(filter_bias=0.1) default, which make_cifar10_gcn_whitened.py
  // (the data of hantek/BinaryConnect cifar10.py and BinaryNet Train-time/cifar10.py) keeps.
  o.zca_bias = 0.1f;
  if (pre == "gcn+lcn" || pre == "gcn+lcn-all") {
    o.gcn_scale = 1.0f;  // pylearn2 GlobalContrastNormalization() defaults, svhn_preprocessing.py
    // pylearn2's LeCunLCN returns inside its channel loop: the authors' data has channel 0 normalized.
    o.lcn_channels = pre == "gcn+lcn" ? 1 : train.channels;
  }
  const auto start = std::chrono::steady_clock::now();
  fitted = fewmul::fit_preprocessing(train.slice(0, train.size() - validation), o, rt);
  if (rank0)
    std::fprintf(stderr, "fewmul: fitted %s preprocessing in %.1f s\n", pre.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return fitted;
}

void print_summary(const std::string& dataset, const std::string& method, const fewmul::train_config& config,
                   const fewmul::train_result& r) {
  double mean_ips = 0;
  for (const auto& e : r.epochs) mean_ips += e.images_per_second;
  mean_ips /= static_cast<double>(std::max<std::size_t>(1, r.epochs.size()));
  std::printf(
      "{\"summary\": true, \"dataset\": \"%s\", \"method\": \"%s\", \"epochs\": %zu, \"best_epoch\": %zu, "
      "\"best_val_error\": %.4f, \"test_error\": %.4f, \"test_error_packed\": %.4f, \"final_test_error\": %.4f, "
      "\"total_seconds\": %.1f, \"mean_images_per_s\": %.0f, \"bn_reestimate_seconds\": %.2f, \"qbp_kmin\": %d, "
      "\"qbp_kmax\": %d}\n",
      dataset.c_str(), method.c_str(), r.epochs.size(), r.best_epoch, r.best_validation_error, r.test_error_at_best,
      r.test_error_packed_at_best, r.epochs.empty() ? 1.0 : r.epochs.back().test_error, r.total_seconds, mean_ips,
      r.bn_reestimate_seconds, config.qbp_kmin, config.qbp_kmax);
  std::fprintf(stderr,
               "fewmul: test error %.2f%% (%.2f%% with packed deterministic weights), model of best validation "
               "epoch %zu, %.1f s in all\n",
               100.0 * r.test_error_at_best, 100.0 * r.test_error_packed_at_best, r.best_epoch, r.total_seconds);
}

int run_train(const train_flags& f, const CLI::App& train) {
  fewmul::collective* job = join_job();
  const bool rank0 = job == nullptr || job->rank == 0;
  if (!rank0) {  // only rank 0 prints and writes
    if (std::freopen("/dev/null", "w", stdout) == nullptr) throw fewmul::error("cannot silence stdout");
  }
  const given_flags given{train};
  const output_locks locks = claim_outputs(f, rank0);
  fewmul::checkpoint c;
  std::unique_ptr<fewmul::training_state> resume;
  const std::string& dataset = f.dataset;
  if (!f.resume_path.empty()) {
    // The checkpoint fixes the run; only the epoch count (to extend it) and the threads may change.
    c = fewmul::load_checkpoint(f.resume_path);
    check_resume_flags(f, train, c);
    if (given("--epochs")) c.config.epochs = f.epochs;
    if (given("--threads")) c.config.threads = f.threads;
    if (c.meta.dataset != dataset)
      throw fewmul::error(f.resume_path + ": checkpoint of a " + c.meta.dataset + " run, not " + dataset);
    resume = std::make_unique<fewmul::training_state>(c.state);
  }
  // In a job the first process of each node loads (and below preprocesses) the data for the node's processes.
  const bool loads_data = first_on_node(job);
  loaded_data data;
  if (loads_data) {
    data = load_data(dataset, data_dir_for(dataset, f.data_dir), f.svhn_extra);
    if (f.train_limit > 0 && f.train_limit < data.train.size()) data.train = data.train.slice(0, f.train_limit);
  }
  share_data_on_node(job, dataset, data);
  // --threads 0 (all) in a job: this process's share of the node's hardware threads.
  int threads = resume ? c.config.threads : f.threads;
  if (job != nullptr && threads == 0) threads = fair_share_of_threads();
  if (resume) c.config.threads = threads;
  const fewmul::runtime rt(threads);
  // Fitting and applying the preprocessing in a job: the node's cores, which its other processes leave idle
  // meanwhile (the same bits for any thread count).
  std::optional<fewmul::runtime> node_threads;
  if (processes_on_node(job) > 1) node_threads.emplace(std::max(1, rt.threads()) * processes_on_node(job));
  const fewmul::runtime& node_rt = node_threads ? *node_threads : rt;
  if (rank0 && rt.threads() > static_cast<int>(std::max(1u, std::thread::hardware_concurrency())))
    std::fprintf(stderr, "fewmul: warning: %d threads on %u hardware threads run slower than one per core\n",
                 rt.threads(), std::thread::hardware_concurrency());
  if (!resume) {
    std::pair<float, float> paper_dropout;
    c.config = configure_training(f, given, dataset, data.train.size(), threads, paper_dropout);
    c.architecture = configure_architecture(f, given, dataset, data.meta, c.config.training_method, paper_dropout);
    c.meta = data.meta;
    c.meta.method = f.method_text;
    fewmul::validate(c.config);  // before the preprocessing is fitted (minutes for ZCA)
    fewmul::validate(c.architecture);
    const bool lin_method = fewmul::traits_of(c.config.training_method).paper == fewmul::method_paper::lin2016;
    if (loads_data)  // rank 0, which writes the model, always loads
      c.meta.preprocess =
          fit_run_preprocessing(f, dataset, lin_method, data.train, c.config.validation, node_rt, rank0);
  }
  const fewmul::train_config& config = c.config;
  const std::string method(fewmul::method_name(config.training_method));
  if (loads_data) {
    c.meta.preprocess.apply(data.train, node_rt);
    c.meta.preprocess.apply(data.test, node_rt);
  }
  data_ready_on_node(job);

  fewmul::network net = fewmul::make_network(c);
  if (rank0) {
    const std::string processes = job ? std::to_string(job->size) + " processes x " : "";
    std::fprintf(stderr, "fewmul: %s, method %s, isa %s, %s%d threads, %zu train / %zu validation / %zu test%s\n",
                 dataset.c_str(), method.c_str(), std::string(fewmul::isa_name(fewmul::active_isa())).c_str(),
                 processes.c_str(), rt.threads(), data.train.size() - std::min(config.validation, data.train.size()),
                 config.validation, data.test.size(),
                 resume ? (", resuming after epoch " + std::to_string(c.state.progress.epochs.size())).c_str() : "");
    std::fprintf(stderr, "fewmul: %s\n", net.describe().c_str());
  }

  fewmul::train_observer observer;
  if (!f.quiet && rank0) observer.on_batch = print_progress;
  if (injected("FEWMUL_TEST_FAIL_RANK", job) || injected("FEWMUL_TEST_STALL_RANK", job))
    observer.on_batch = [&, epoch = c.state.progress.epochs.size() + 1](std::size_t done, std::size_t total) mutable {
      if (done == 2 && epoch == config.epochs) {
        if (injected("FEWMUL_TEST_FAIL_RANK", job)) throw fewmul::error("failure injected by FEWMUL_TEST_FAIL_RANK");
        for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
      }
      if (done == total) ++epoch;
    };
  // --histogram: the exponents of every weight layer's input, on the first 10,000 training examples at the
  // middle epoch (the paper's snapshot mid-training).
  const std::size_t histogram_epoch = (config.epochs + 1) / 2;
  if (!f.histogram_path.empty() && resume && c.state.progress.epochs.size() >= histogram_epoch)
    std::fprintf(stderr, "fewmul: warning: the run is past its middle epoch %zu, --histogram writes nothing\n",
                 histogram_epoch);
  observer.on_epoch = [&](const fewmul::epoch_metrics& m) {
    if (!rank0) return;
    print_epoch(m, method);
    if (f.histogram_path.empty() || m.epoch != histogram_epoch) return;
    const std::size_t train_count = data.train.size() - std::min(config.validation, data.train.size());
    try {
      fewmul::write_exponent_histogram(f.histogram_path,
                                       fewmul::exponent_histogram(net, data.train.slice(0, train_count), rt, 10000),
                                       m.epoch, method);
    } catch (const fewmul::error& e) {  // a figure is not worth the run
      std::fprintf(stderr, "fewmul: warning: %s\n", e.what());
    }
  };
  if (!f.checkpoint_path.empty() && rank0)
    observer.on_state = [&](const fewmul::training_state& state) {
      c.state = state;
      fewmul::save_checkpoint(f.checkpoint_path, c);
    };
  std::signal(SIGINT, [](int) { fewmul::request_stop(); });
  const fewmul::train_result r = fewmul::train(net, data.train, data.test, config, observer, resume.get(), job);
  std::signal(SIGINT, SIG_DFL);
  print_job_memory(job);
  if (!rank0) return 0;
  const std::size_t batches = (data.train.size() - config.validation) / config.batch;
  print_job_traffic(job, batches * (r.epochs.size() - (resume ? c.state.progress.epochs.size() : 0)));
  print_summary(dataset, method, config, r);
  if (!f.save_model_path.empty()) {
    const std::size_t bytes = fewmul::save_model(f.save_model_path, net, c.meta);
    std::fprintf(stderr, "fewmul: wrote %s (%zu bytes, float32 parameters would take %zu)\n", f.save_model_path.c_str(),
                 bytes, fewmul::float32_parameter_bytes(net));
  }
  return 0;
}

}  // namespace

command add_train_command(CLI::App& app) {
  auto flags = std::make_shared<train_flags>();
  train_flags& f = *flags;
  CLI::App* train = app.add_subcommand("train", "Train a network on a dataset");
  train->add_option("dataset", f.dataset, "Dataset: mnist (MLP), cifar10 or svhn (convnet)")
      ->required()
      ->check(CLI::IsMember({"mnist", "cifar10", "svhn"}));
  train->add_option("--method", f.method_text, "fp32, bc, bc-stoch, tc, bc+qbp, tc+qbp, bnn or qnn")
      ->check(CLI::IsMember(method_names()))
      ->capture_default_str();
  train->add_option("--wbits", f.weight_bits, "qnn: bits per weight")->check(CLI::Range(1, 8))->capture_default_str();
  train->add_option("--abits", f.activation_bits, "qnn (--activation quantized): bits per activation")
      ->check(CLI::Range(1, 8))
      ->capture_default_str();
  train->add_option("--epochs", f.epochs, "Epochs")
      ->check(whole_in(limits::epochs_min, limits::epochs_max))
      ->capture_default_str();
  train->add_option("--batch", f.batch, "Minibatch size (convnets of fp32 and the BinaryConnect methods: 100)")
      ->check(whole_in(limits::batch_min, limits::batch_max))
      ->capture_default_str();
  train
      ->add_option("--lr", f.lr,
                   "Initial learning rate (default: MNIST MLP 0.3 for fp32, 1.0 for binary/ternary, 0.003 for "
                   "bnn/qnn (Adam); convnets 0.3, bnn/qnn 0.003)")
      ->check(number_in(limits::lr_min, limits::lr_max));
  train
      ->add_option("--lr-decay", f.lr_decay,
                   "Per-epoch learning-rate factor (default: follow --schedule; without --schedule, Lin et al.'s "
                   "methods on cifar10/svhn take their scripts' factor, (final lr / lr)^(1 / their epochs))")
      ->check(number_in(limits::lr_decay_min, limits::lr_decay_max));
  train
      ->add_option("--schedule", f.schedule_text,
                   "continuous (decay per minibatch to lr/100 at the very end; the default, except for Lin et al.'s "
                   "methods on cifar10/svhn: see --lr-decay) or paper (the authors' lr, final "
                   "lr, epochs, batch and optimizer for the dataset and method; --epochs, --batch, --lr, "
                   "--optimizer still override)")
      ->check(CLI::IsMember({"continuous", "paper"}))
      ->capture_default_str();
  train->add_option("--histogram", f.histogram_path,
                    "Write the exponent histogram (log2|x|) of every weight layer's input at the middle epoch "
                    "to this JSON file");
  train
      ->add_option("--optimizer", f.optimizer_text,
                   "sgd, adam, adamax or shift-adamax (AdaMax with power-of-two steps); default adam for bnn/qnn")
      ->check(CLI::IsMember({"sgd", "adam", "adamax", "shift-adamax"}))
      ->capture_default_str();
  train->add_flag("--shift-bn", f.shift_bn, "Shift-based batch normalization (powers of two via AP2)");
  train->add_option("--dropout-input", f.dropout_input, "Dropout probability on the inputs (BNN paper MNIST: 0.2)")
      ->check(number_in(limits::dropout_min, limits::dropout_max));
  train
      ->add_option("--dropout-hidden", f.dropout_hidden,
                   "Dropout probability after hidden activations (BNN paper: 0.5)")
      ->check(number_in(limits::dropout_min, limits::dropout_max));
  train->add_option("--momentum", f.momentum, "SGD momentum")
      ->check(number_in(limits::momentum_min, limits::momentum_max))
      ->capture_default_str();
  train->add_option("--loss", f.loss_text, "hinge (squared hinge) or xent (softmax cross-entropy)")
      ->check(CLI::IsMember({"hinge", "xent"}))
      ->capture_default_str();
  train
      ->add_option("--activation", f.activation_text,
                   "relu, hardtanh, sign or quantized (--abits; default: sign for bnn, quantized for qnn, else relu)")
      ->check(CLI::IsMember({"relu", "hardtanh", "sign", "quantized"}))
      ->capture_default_str();
  train->add_option(
      "--hidden", f.hidden_text,
      "MNIST MLP: hidden layer widths, comma-separated (default: 1024,1024,1024; bnn/qnn 4096,4096,4096)");
  train
      ->add_option(
          "--width", f.width,
          "Multiplier of the preset's layer widths (MNIST MLP without --hidden, CIFAR-10/SVHN convnet; e.g. 0.25)")
      ->check(number_in(limits::width_min, limits::width_max))
      ->capture_default_str();
  train
      ->add_option("--convnet", f.convnet_text,
                   "CIFAR-10/SVHN network: lin (Lin et al.'s valid-padded 128C3-128C3-MP2-256C2-256C2-MP2-512C2-"
                   "512C2-MP2-1024C2-1024FC), bnn (the BNN paper's same-padded 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-"
                   "1024FC-1024FC) or auto (bnn for bnn/qnn, else lin)")
      ->check(CLI::IsMember({"auto", "lin", "bnn"}))
      ->capture_default_str();
  train
      ->add_option(
          "--preprocess", f.preprocess_text,
          "auto (the papers': mnist center for Lin et al.'s methods, none for bnn/qnn; cifar10 gcn+zca; svhn "
          "gcn+lcn; bnn/qnn convnets pm1), none, center (subtract the training mean), gcn, gcn+zca (regularizer "
          "0.1), gcn+lcn (LeCun local contrast normalization of channel 0, as pylearn2's LeCunLCN gave the "
          "authors), gcn+lcn-all (every channel) or pm1 (pixels scaled to [-1, 1])")
      ->check(CLI::IsMember({"auto", "none", "center", "gcn", "gcn+zca", "gcn+lcn", "gcn+lcn-all", "pm1"}))
      ->capture_default_str();
  train->add_option("--augment-shift", f.augment_shift, "Random shifts of up to N pixels (random crops) in training")
      ->check(whole_in(0, limits::augment_shift_max));
  train->add_flag("--augment-flip", f.augment_flip, "Random left-right mirroring in training");
  train->add_flag("--svhn-extra", f.svhn_extra,
                  "SVHN: also train on extra_32x32.mat, holding out the papers' class-balanced 6,000-image "
                  "validation set (400 per digit from train, 200 from extra)");
  train->add_option("--seed", f.seed, "Random seed (same seed => same result)")
      ->check(whole_in(0, UINT64_MAX))
      ->capture_default_str();
  train->add_option("--threads", f.threads, "Threads (0 = all; under mpirun: this process's share of the node's)")
      ->check(whole_in(0, limits::threads_max))
      ->capture_default_str();
  train
      ->add_option("--validation", f.validation,
                   "Examples held out of the training set (default: mnist 10000, cifar10 5000, svhn 6000 or 10%)")
      ->check(whole_in(0, limits::examples_max));
  train->add_option("--train-limit", f.train_limit, "Use only the first N training examples (0 = all)")
      ->check(whole_in(0, limits::examples_max));
  train->add_option("--qbp-kmin", f.qbp_kmin, "Smallest exponent of quantized inputs")
      ->check(CLI::Range(fewmul::kernels::pow2_min_exponent, fewmul::kernels::pow2_max_exponent))
      ->capture_default_str();
  train->add_option("--qbp-kmax", f.qbp_kmax, "Largest exponent of quantized inputs")
      ->check(CLI::Range(fewmul::kernels::pow2_min_exponent, fewmul::kernels::pow2_max_exponent))
      ->capture_default_str();
  train->add_flag("--qbp-authors", f.qbp_authors,
                  "Quantized backprop rounded as the authors' code (hantek/BinaryConnect layer.py): dense layers "
                  "without exponent clip; convolutions with levels up to 2^(kmax+1) and |x| < 2^kmin (zeros: "
                  "negative) to 2^kmin");
  train->add_option("--data", f.data_dir,
                    "Dataset directory (default build/data/<dataset>): MNIST IDX files, CIFAR-10 binary batches, or "
                    "SVHN train_32x32.mat/test_32x32.mat");
  train
      ->add_option("--bn-reestimate", f.bn_reestimate,
                   "Recompute batch-norm statistics with the test-time weights over the first N training examples "
                   "before each evaluation (0 = keep the training running averages)")
      ->check(whole_in(0, limits::bn_reestimate_max))
      ->capture_default_str();
  train->add_flag("--quiet", f.quiet, "No progress bar");
  train
      ->add_option("--batch-parts", f.batch_parts,
                   "Cut each minibatch into N parts whose sums are added in order: the result depends on N, not on "
                   "how many processes (mpirun -n R, R <= N) share the parts")
      ->check(whole_in(1, limits::batch_parts_max))
      ->capture_default_str();
  train->add_option("--checkpoint", f.checkpoint_path, "Write a training checkpoint here after every epoch");
  train
      ->add_option("--resume", f.resume_path,
                   "Continue the run of this checkpoint (bit-identical to an uninterrupted run)")
      ->check(CLI::ExistingFile);
  train->add_option("--save-model", f.save_model_path, "Export the best-on-validation model here at the end");

  return {train, [flags, train] {
            const train_flags& f = *flags;
            if (f.qbp_kmin > f.qbp_kmax) throw fewmul::error("--qbp-kmin must not exceed --qbp-kmax");
            if (f.svhn_extra && f.train_limit > 0)
              throw fewmul::error(
                  "--train-limit cannot be combined with --svhn-extra: the balanced validation set is "
                  "the tail of the training data it would cut");
            if (train->count("--convnet") > 0 && f.dataset == "mnist")
              throw fewmul::error("--convnet applies to cifar10 and svhn (mnist trains an MLP)");
            if (train->count("--wbits") > 0 && f.method_text != "qnn")
              throw fewmul::error("--wbits applies to --method qnn");
            if (train->count("--abits") > 0 && f.method_text != "qnn" && f.activation_text != "quantized")
              throw fewmul::error("--abits applies to --method qnn or --activation quantized");
            return run_train(f, *train);
          }};
}

}  // namespace fewmul_cli
