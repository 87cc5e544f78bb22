// fewmul train: flags, the checkpoint/resume rules and the training run.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "cli_common.hpp"

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
  std::string data_dir;     // default: build/data/<dataset>
  std::string hidden_text;  // empty: the method's preset (mlp_preset_hidden)
  double width = 1.0;
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
  agree("--loss", f.loss_text, k.loss == fewmul::loss_kind::softmax_cross_entropy ? "xent" : "hinge");
  const char* optimizers[] = {"sgd", "adam", "adamax", "shift-adamax"};
  agree("--optimizer", f.optimizer_text, optimizers[static_cast<int>(k.optimizer)]);
  const char* activations[] = {"relu", "hardtanh", "sign", "quantized"};
  agree("--activation", f.activation_text, activations[static_cast<int>(a.act)]);
  if (given("--hidden")) agree("--hidden", hidden_text(parse_hidden(f.hidden_text)), hidden_text(a.hidden));
  auto on_off = [](bool b) { return std::string(b ? "on" : "off"); };
  agree("--augment-flip", on_off(f.augment_flip), on_off(k.augment_flip));
  agree("--shift-bn", on_off(f.shift_bn), on_off(a.shift_batch_norm));
  for (const char* fixed : {"--width", "--preprocess", "--svhn-extra"})
    if (given(fixed))
      throw fewmul::error(std::string(fixed) + " cannot be given with --resume: " + path +
                          " fixes the network, the preprocessing and the data");
  const std::size_t done = c.state.progress.epochs.size();
  if (given("--epochs") && f.epochs < done)
    throw fewmul::error("--epochs " + std::to_string(f.epochs) + " is fewer than the " + std::to_string(done) +
                        " epochs " + path + " has done already");
}

int run_train(const train_flags& f, const CLI::App& train) {
  const bool epochs_given = train.count("--epochs") > 0, threads_given = train.count("--threads") > 0;
  const bool validation_given = train.count("--validation") > 0, optimizer_given = train.count("--optimizer") > 0;
  const bool activation_given = train.count("--activation") > 0, batch_given = train.count("--batch") > 0;
  // Outputs first: a path that cannot or must not be written is found before hours of training.
  if (!f.checkpoint_path.empty() && !f.save_model_path.empty() && same_file(f.checkpoint_path, f.save_model_path))
    throw fewmul::error("--save-model " + f.save_model_path + " names the same file as --checkpoint " +
                        f.checkpoint_path);
  if (!f.resume_path.empty() && !f.save_model_path.empty() && same_file(f.resume_path, f.save_model_path))
    throw fewmul::error("--save-model " + f.save_model_path + " is the checkpoint this run resumes from (--resume)");
  std::unique_ptr<fewmul::output_lock> checkpoint_lock, model_lock;
  if (!f.checkpoint_path.empty()) {
    check_output(f.checkpoint_path, fewmul::file_kind::checkpoint, "--checkpoint");
    checkpoint_lock = std::make_unique<fewmul::output_lock>(f.checkpoint_path, "--checkpoint");
  }
  if (!f.save_model_path.empty()) {
    check_output(f.save_model_path, fewmul::file_kind::model, "--save-model");
    model_lock = std::make_unique<fewmul::output_lock>(f.save_model_path, "--save-model");
  }
  if (!f.histogram_path.empty()) {  // found before training, as the other outputs
    const bool existed = std::filesystem::exists(f.histogram_path);
    if (!std::ofstream(f.histogram_path, std::ios::app))
      throw fewmul::error("--histogram " + f.histogram_path + ": cannot write there");
    if (!existed) std::filesystem::remove(f.histogram_path);
  }
  fewmul::checkpoint c;
  std::unique_ptr<fewmul::training_state> resume;
  std::string dataset = f.dataset;
  if (!f.resume_path.empty()) {
    // The checkpoint fixes the run; only the epoch count (to extend it) and the threads may change.
    c = fewmul::load_checkpoint(f.resume_path);
    check_resume_flags(f, train, c);
    if (epochs_given) c.config.epochs = f.epochs;
    if (threads_given) c.config.threads = f.threads;
    if (c.meta.dataset != dataset)
      throw fewmul::error(f.resume_path + ": checkpoint of a " + c.meta.dataset + " run, not " + dataset);
    resume = std::make_unique<fewmul::training_state>(c.state);
  }
  loaded_data data = load_data(dataset, data_dir_for(dataset, f.data_dir), f.svhn_extra);
  if (f.train_limit > 0 && f.train_limit < data.train.size()) data.train = data.train.slice(0, f.train_limit);
  const fewmul::runtime rt(resume ? c.config.threads : f.threads);
  if (rt.threads() > static_cast<int>(std::max(1u, std::thread::hardware_concurrency())))
    std::fprintf(stderr, "fewmul: warning: %d threads on %u hardware threads run slower than one per core\n",
                 rt.threads(), std::thread::hardware_concurrency());
  if (!resume) {
    fewmul::train_config& config = c.config;
    config.training_method = fewmul::parse_method(f.method_text);
    config.epochs = f.epochs;
    // Convnets of Lin et al.'s methods: their batch 100 (hantek/BinaryConnect cifar10.py, svhn.py).
    const bool lin_convnet = dataset != "mnist" && config.training_method != fewmul::method::bnn &&
                             config.training_method != fewmul::method::qnn;
    config.batch = lin_convnet && !batch_given ? 100 : f.batch;
    config.lr = f.lr > 0.0f ? f.lr : fewmul::default_learning_rate(config.training_method, dataset != "mnist");
    config.lr_decay = f.lr_decay;
    const bool bnn = config.training_method == fewmul::method::bnn || config.training_method == fewmul::method::qnn;
    // BNN and QNN train with Adam unless told otherwise (Hubara et al.).
    config.optimizer = bnn && !optimizer_given ? fewmul::optimizer_kind::adam : parse_optimizer(f.optimizer_text);
    if (f.schedule_text == "paper") {
      // The authors' setup of this dataset and method; flags given explicitly still win.
      const fewmul::paper_preset p = fewmul::paper_preset_for(dataset, config.training_method);
      config.schedule = fewmul::lr_schedule::paper;
      config.lr = f.lr > 0.0f ? f.lr : p.lr_start;
      config.lr_end = std::min(p.lr_end, config.lr);
      if (!epochs_given) config.epochs = p.epochs;
      if (!batch_given) config.batch = p.batch;
      if (!optimizer_given) config.optimizer = p.optimizer;
      std::fprintf(stderr, "fewmul: paper schedule (%s): lr %g -> %g over %zu epochs, batch %zu\n", p.source, config.lr,
                   config.lr_end, config.epochs, config.batch);
    }
    config.weight_bits = f.weight_bits;
    config.momentum = f.momentum;
    config.loss = f.loss_text == "xent" ? fewmul::loss_kind::softmax_cross_entropy : fewmul::loss_kind::squared_hinge;
    config.seed = f.seed;
    config.threads = f.threads;
    config.validation = validation_given ? f.validation : default_validation(dataset, data.train.size());
    config.qbp_kmin = f.qbp_kmin;
    config.qbp_kmax = f.qbp_kmax;
    config.augment_shift = f.augment_shift;
    config.augment_flip = f.augment_flip;
    config.bn_reestimate_examples = f.bn_reestimate;
    const auto act = !activation_given                  ? fewmul::default_activation(config.training_method)
                     : f.activation_text == "hardtanh"  ? fewmul::activation::hard_tanh
                     : f.activation_text == "sign"      ? fewmul::activation::sign
                     : f.activation_text == "quantized" ? fewmul::activation::quantized
                                                        : fewmul::activation::relu;
    if (dataset == "mnist") {
      c.architecture.hidden = f.hidden_text.empty() ? fewmul::mlp_preset_hidden(config.training_method, f.width)
                                                    : parse_hidden(f.hidden_text);
    } else {
      c.architecture = fewmul::paper_convnet(dataset, config.training_method, data.meta.height, data.meta.width,
                                             data.meta.channels, 10, f.width);
    }
    c.architecture.height = data.meta.height;
    c.architecture.width = data.meta.width;
    c.architecture.channels = data.meta.channels;
    c.architecture.act = act;
    c.architecture.activation_bits = f.activation_bits;
    c.architecture.dropout_input = f.dropout_input;
    c.architecture.dropout_hidden = f.dropout_hidden;
    c.architecture.shift_batch_norm = f.shift_bn;
    c.meta = data.meta;
    c.meta.method = f.method_text;
    fewmul::validate(config);  // before the preprocessing is fitted (minutes for ZCA)
    fewmul::validate(c.architecture);
    // Preprocessing as in the papers: GCN + ZCA for CIFAR-10, GCN for SVHN, none for MNIST; fitted on
    // the training examples only (not the validation split).
    std::string pre = f.preprocess_text;
    // BNN and QNN: inputs in [-1, 1], no GCN or ZCA (BinaryNet Train-time/cifar10.py, svhn.py: 2/255 X - 1).
    if (pre == "auto" && bnn && dataset != "mnist") pre = "pm1";
    if (pre == "auto") pre = dataset == "cifar10" ? "gcn+zca" : dataset == "svhn" ? "gcn" : "none";
    if (pre == "pm1") {
      c.meta.preprocess.pm1 = true;
    } else if (pre != "none") {
      if (config.validation >= data.train.size())
        throw fewmul::error("validation split of " + std::to_string(config.validation) + " leaves no training data");
      const auto start = std::chrono::steady_clock::now();
      c.meta.preprocess = fewmul::fit_preprocessing(data.train.slice(0, data.train.size() - config.validation), true,
                                                    pre == "gcn+zca", 1.0f, rt);
      std::fprintf(stderr, "fewmul: fitted %s preprocessing in %.1f s\n", pre.c_str(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }
  const fewmul::train_config& config = c.config;
  const std::string method(fewmul::method_name(config.training_method));
  c.meta.preprocess.apply(data.train, rt);
  c.meta.preprocess.apply(data.test, rt);

  fewmul::network net = fewmul::make_network(c);
  std::fprintf(stderr, "fewmul: %s, method %s, isa %s, %d threads, %zu train / %zu validation / %zu test%s\n",
               dataset.c_str(), method.c_str(), std::string(fewmul::isa_name(fewmul::active_isa())).c_str(),
               rt.threads(), data.train.size() - std::min(config.validation, data.train.size()), config.validation,
               data.test.size(),
               resume ? (", resuming after epoch " + std::to_string(c.state.progress.epochs.size())).c_str() : "");
  std::fprintf(stderr, "fewmul: %s\n", net.describe().c_str());

  fewmul::train_observer observer;
  if (!f.quiet) observer.on_batch = print_progress;
  // --histogram: the exponents of every weight layer's input, on the first 10,000 training examples at the
  // middle epoch (the paper's snapshot mid-training).
  const std::size_t histogram_epoch = (config.epochs + 1) / 2;
  if (!f.histogram_path.empty() && resume && c.state.progress.epochs.size() >= histogram_epoch)
    std::fprintf(stderr, "fewmul: warning: the run is past its middle epoch %zu, --histogram writes nothing\n",
                 histogram_epoch);
  observer.on_epoch = [&](const fewmul::epoch_metrics& m) {
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
  if (!f.checkpoint_path.empty())
    observer.on_state = [&](const fewmul::training_state& state) {
      c.state = state;
      fewmul::save_checkpoint(f.checkpoint_path, c);
    };
  std::signal(SIGINT, [](int) { fewmul::request_stop(); });
  const fewmul::train_result r = fewmul::train(net, data.train, data.test, config, observer, resume.get());
  std::signal(SIGINT, SIG_DFL);
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
      ->check(CLI::IsMember({"fp32", "bc", "bc-stoch", "tc", "bc+qbp", "tc+qbp", "bnn", "qnn"}))
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
  train->add_option("--lr-decay", f.lr_decay, "Per-epoch learning-rate factor (default: follow --schedule)")
      ->check(number_in(limits::lr_decay_min, limits::lr_decay_max));
  train
      ->add_option("--schedule", f.schedule_text,
                   "continuous (decay per minibatch to lr/100 at the very end) or paper (the authors' lr, final "
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
      ->add_option("--preprocess", f.preprocess_text,
                   "auto (cifar10: gcn+zca, svhn: gcn, mnist: none; bnn/qnn convnets: pm1), none, gcn, gcn+zca or "
                   "pm1 (pixels scaled to [-1, 1])")
      ->check(CLI::IsMember({"auto", "none", "gcn", "gcn+zca", "pm1"}))
      ->capture_default_str();
  train->add_option("--augment-shift", f.augment_shift, "Random shifts of up to N pixels (random crops) in training")
      ->check(whole_in(0, limits::augment_shift_max));
  train->add_flag("--augment-flip", f.augment_flip, "Random left-right mirroring in training");
  train->add_flag("--svhn-extra", f.svhn_extra, "SVHN: also train on extra_32x32.mat");
  train->add_option("--seed", f.seed, "Random seed (same seed => same result)")
      ->check(whole_in(0, UINT64_MAX))
      ->capture_default_str();
  train->add_option("--threads", f.threads, "Threads (0 = all)")
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
  train->add_option("--checkpoint", f.checkpoint_path, "Write a training checkpoint here after every epoch");
  train
      ->add_option("--resume", f.resume_path,
                   "Continue the run of this checkpoint (bit-identical to an uninterrupted run)")
      ->check(CLI::ExistingFile);
  train->add_option("--save-model", f.save_model_path, "Export the best-on-validation model here at the end");

  return {train, [flags, train] {
            const train_flags& f = *flags;
            if (f.qbp_kmin > f.qbp_kmax) throw fewmul::error("--qbp-kmin must not exceed --qbp-kmax");
            if (train->count("--wbits") > 0 && f.method_text != "qnn")
              throw fewmul::error("--wbits applies to --method qnn");
            if (train->count("--abits") > 0 && f.method_text != "qnn" && f.activation_text != "quantized")
              throw fewmul::error("--abits applies to --method qnn or --activation quantized");
            return run_train(f, *train);
          }};
}

}  // namespace fewmul_cli
