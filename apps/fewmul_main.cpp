// fewmul command-line interface: training and inspection.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "fewmul/fewmul.hpp"

namespace {

struct train_flags {
  std::string dataset = "mnist";
  std::string method_text = "bc+qbp";
  std::size_t epochs = 20;
  std::size_t batch = 200;
  float lr = 0.0f;  // 0: the method's preset
  float lr_decay = 0.0f;
  std::string optimizer_text = "sgd";
  float momentum = 0.0f;
  std::string loss_text = "hinge";
  std::string activation_text = "relu";
  std::uint64_t seed = 1;
  int threads = 0;
  std::size_t validation = 10000;
  std::size_t train_limit = 0;
  int qbp_kmin = -4;
  int qbp_kmax = 3;
  std::string data_dir = "build/data/mnist";
  std::string hidden_text = "1024,1024,1024";
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

int run_train(const train_flags& f) {
  if (f.dataset != "mnist") throw fewmul::error("unknown dataset '" + f.dataset + "' (this build trains: mnist)");
  fewmul::train_config config;
  config.training_method = fewmul::parse_method(f.method_text);
  config.epochs = f.epochs;
  config.batch = f.batch;
  config.lr = f.lr > 0.0f ? f.lr : fewmul::default_learning_rate(config.training_method);
  config.lr_decay = f.lr_decay;
  config.optimizer = f.optimizer_text == "adam" ? fewmul::optimizer_kind::adam : fewmul::optimizer_kind::sgd;
  config.momentum = f.momentum;
  config.loss = f.loss_text == "xent" ? fewmul::loss_kind::softmax_cross_entropy : fewmul::loss_kind::squared_hinge;
  config.seed = f.seed;
  config.threads = f.threads;
  config.validation = f.validation;
  config.qbp_kmin = f.qbp_kmin;
  config.qbp_kmax = f.qbp_kmax;
  const auto hidden = parse_hidden(f.hidden_text);

  fewmul::mnist_data data = fewmul::load_mnist(f.data_dir);
  if (f.train_limit > 0 && f.train_limit < data.train.size()) data.train = data.train.slice(0, f.train_limit);

  const auto options = fewmul::dense_options_for(config.training_method, config.qbp_kmin, config.qbp_kmax);
  fewmul::network net = fewmul::make_mlp(28 * 28, hidden, 10, options,
                                         f.activation_text == "hardtanh" ? fewmul::activation::hard_tanh
                                                                          : fewmul::activation::relu,
                                         config.seed);
  std::fprintf(stderr, "fewmul: mnist, method %s, isa %s, %d threads, %zu train / %zu validation / %zu test\n",
               f.method_text.c_str(), std::string(fewmul::isa_name(fewmul::active_isa())).c_str(),
               fewmul::runtime(config.threads).threads(), data.train.size() - config.validation, config.validation,
               data.test.size());
  std::fprintf(stderr, "fewmul: %s\n", net.describe().c_str());

  fewmul::train_observer observer;
  if (!f.quiet) observer.on_batch = print_progress;
  observer.on_epoch = [&](const fewmul::epoch_metrics& m) {
    std::printf(
        "{\"epoch\": %zu, \"method\": \"%s\", \"loss\": %.6f, \"train_error\": %.4f, \"val_error\": %.4f, "
        "\"test_error\": %.4f, \"test_error_packed\": %.4f, \"lr\": %.6g, \"seconds\": %.2f, \"images_per_s\": %.0f, "
        "\"best\": %s}\n",
        m.epoch, f.method_text.c_str(), m.loss, m.train_error, m.validation_error, m.test_error, m.test_error_packed,
        m.lr, m.seconds,
        m.images_per_second, m.best ? "true" : "false");
    std::fflush(stdout);
  };
  const fewmul::train_result r = fewmul::train(net, data.train, data.test, config, observer);
  double mean_ips = 0;
  for (const auto& e : r.epochs) mean_ips += e.images_per_second;
  mean_ips /= static_cast<double>(r.epochs.size());
  std::printf(
      "{\"summary\": true, \"method\": \"%s\", \"epochs\": %zu, \"best_epoch\": %zu, \"best_val_error\": %.4f, "
      "\"test_error\": %.4f, \"test_error_packed\": %.4f, \"final_test_error\": %.4f, \"total_seconds\": %.1f, "
      "\"mean_images_per_s\": %.0f}\n",
      f.method_text.c_str(), r.epochs.size(), r.best_epoch, r.best_validation_error, r.test_error_at_best,
      r.test_error_packed_at_best,
      r.epochs.back().test_error, r.total_seconds, mean_ips);
  std::fprintf(stderr,
               "fewmul: test error %.2f%% (%.2f%% with packed deterministic weights), model of best validation "
               "epoch %zu, %.1f s in all\n",
               100.0 * r.test_error_at_best, 100.0 * r.test_error_packed_at_best, r.best_epoch, r.total_seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fewmul: train and run neural networks with (almost) no multiplications"};
  app.require_subcommand(1);
  std::string isa_text = "auto";
  app.add_option("--isa", isa_text, "Kernel ISA: auto, scalar, sse4.2, avx2, avx512bw, neon64")
      ->check(CLI::IsMember({"auto", "scalar", "sse4.2", "avx2", "avx512bw", "neon64"}));

  train_flags f;
  CLI::App* train = app.add_subcommand("train", "Train a network on a dataset");
  train->add_option("dataset", f.dataset, "Dataset")->required()->check(CLI::IsMember({"mnist"}));
  train->add_option("--method", f.method_text, "fp32, bc, bc-stoch, tc, bc+qbp or tc+qbp")
      ->check(CLI::IsMember({"fp32", "bc", "bc-stoch", "tc", "bc+qbp", "tc+qbp"}))
      ->capture_default_str();
  train->add_option("--epochs", f.epochs, "Epochs")->check(CLI::Range(1, 100000))->capture_default_str();
  train->add_option("--batch", f.batch, "Minibatch size")->check(CLI::Range(2, 100000))->capture_default_str();
  train->add_option("--lr", f.lr, "Initial learning rate (default: 0.3 for fp32, 1.0 for binary/ternary methods)")
      ->check(CLI::PositiveNumber);
  train->add_option("--lr-decay", f.lr_decay, "Per-epoch learning-rate factor (default: reach lr/100 at the end)")
      ->check(CLI::Range(0.0f, 1.0f));
  train->add_option("--optimizer", f.optimizer_text, "sgd or adam")
      ->check(CLI::IsMember({"sgd", "adam"}))
      ->capture_default_str();
  train->add_option("--momentum", f.momentum, "SGD momentum")->check(CLI::Range(0.0f, 0.999f))->capture_default_str();
  train->add_option("--loss", f.loss_text, "hinge (squared hinge) or xent (softmax cross-entropy)")
      ->check(CLI::IsMember({"hinge", "xent"}))
      ->capture_default_str();
  train->add_option("--activation", f.activation_text, "relu or hardtanh")
      ->check(CLI::IsMember({"relu", "hardtanh"}))
      ->capture_default_str();
  train->add_option("--hidden", f.hidden_text, "Hidden layer widths, comma-separated")->capture_default_str();
  train->add_option("--seed", f.seed, "Random seed (same seed => same result)")->capture_default_str();
  train->add_option("--threads", f.threads, "Threads (0 = all)")->check(CLI::Range(0, 1024))->capture_default_str();
  train->add_option("--validation", f.validation, "Examples held out of the training set")->capture_default_str();
  train->add_option("--train-limit", f.train_limit, "Use only the first N training examples (0 = all)");
  train->add_option("--qbp-kmin", f.qbp_kmin, "Smallest exponent of quantized inputs")
      ->check(CLI::Range(fewmul::kernels::pow2_min_exponent, fewmul::kernels::pow2_max_exponent))
      ->capture_default_str();
  train->add_option("--qbp-kmax", f.qbp_kmax, "Largest exponent of quantized inputs")
      ->check(CLI::Range(fewmul::kernels::pow2_min_exponent, fewmul::kernels::pow2_max_exponent))
      ->capture_default_str();
  train->add_option("--data", f.data_dir, "Directory of the MNIST IDX files")->capture_default_str();
  train->add_flag("--quiet", f.quiet, "No progress bar");

  CLI::App* isas = app.add_subcommand("isa", "List the kernel ISAs this CPU supports (best last)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    fewmul::force_isa(fewmul::parse_isa(isa_text));
    if (*isas) {
      for (fewmul::isa i : fewmul::supported_isas()) std::cout << fewmul::isa_name(i) << "\n";
      return 0;
    }
    if (f.qbp_kmin > f.qbp_kmax) throw fewmul::error("--qbp-kmin must not exceed --qbp-kmax");
    return run_train(f);
  } catch (const fewmul::error& e) {
    std::fprintf(stderr, "fewmul: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fewmul: internal error: %s\n", e.what());
    return 2;
  }
}
