// fewmul eval: test error and speed of a model file: the packed path (bit planes end to end) where the
// model compiles to one, else the float path; --float-path runs the float path as well.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli_common.hpp"

namespace fewmul_cli {
namespace {

int run_eval(const std::string& model_path, const std::string& dataset_given, const std::string& data_dir, int threads,
             bool float_path) {
  fewmul::model m = fewmul::load_model(model_path);
  const std::string dataset = dataset_given.empty() ? m.meta.dataset : dataset_given;
  loaded_data data = load_data(dataset, data_dir_for(dataset, data_dir), false, true);
  if (data.test.features != m.net.input_size())
    throw fewmul::error(model_path + ": the model takes " + std::to_string(m.net.input_size()) + " inputs, " + dataset +
                        " images have " + std::to_string(data.test.features));
  const fewmul::runtime rt(threads);
  m.meta.preprocess.apply(data.test, rt);
  std::printf("{\"model\": \"%s\", \"dataset\": \"%s\", \"examples\": %zu", model_path.c_str(), dataset.c_str(),
              data.test.size());
  // BNN/QNN MLPs and convnets run with bit-plane activations end to end (fused batch norm + activation);
  // the weights stay packed unless the float path runs too.
  if (m.packed) {
    constexpr std::size_t batch = 1000;
    std::vector<float> scores(batch * m.packed->output_size());
    std::size_t errors = 0;
    bool bytes = true;
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < data.test.size(); i += batch) {
      const std::size_t rows = std::min(batch, data.test.size() - i);
      m.packed->run(data.test.x.data() + i * data.test.features, rows, scores.data(), rt);
      bytes = bytes && m.packed->last_run_used_input_bytes();
      fewmul::matrix out(rows, m.packed->output_size());
      std::copy_n(scores.begin(), out.data.size(), out.data.begin());
      errors += fewmul::count_errors(out, data.test.y.data() + i);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf(", \"path\": \"packed\", \"test_error\": %.4f, \"images_per_s\": %.0f, \"packed_input\": \"%s\"",
                static_cast<double>(errors) / static_cast<double>(data.test.size()),
                static_cast<double>(data.test.size()) / seconds, bytes ? "bytes" : "floats");
  }
  if (!m.packed || float_path) {
    const auto start = std::chrono::steady_clock::now();
    const double err = fewmul::evaluate(m.net, data.test, rt, false);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf(m.packed ? ", \"float_test_error\": %.4f, \"float_images_per_s\": %.0f"
                         : ", \"path\": \"float\", \"test_error\": %.4f, \"images_per_s\": %.0f",
                err, static_cast<double>(data.test.size()) / seconds);
  }
  std::printf("}\n");
  return 0;
}

}  // namespace

command add_eval_command(CLI::App& app) {
  struct flags {
    std::string model, dataset, data_dir;
    int threads = 0;
    bool float_path = false;
  };
  auto f = std::make_shared<flags>();
  CLI::App* eval = app.add_subcommand("eval", "Test error of a model file");
  eval->add_option("model", f->model, "Model file")->required()->check(CLI::ExistingFile);
  eval->add_option("--dataset", f->dataset, "Dataset (default: the model's)")
      ->check(CLI::IsMember({"mnist", "cifar10", "svhn"}));
  eval->add_option("--data", f->data_dir, "Dataset directory (default build/data/<dataset>)");
  eval->add_option("--threads", f->threads, "Threads (0 = all)")->check(whole_in(0, limits::threads_max));
  eval->add_flag("--float-path", f->float_path,
                 "Also run the float-activation path (network::forward) on a model that runs packed; it decodes "
                 "the packed weights into floats");
  return {eval, [f] { return run_eval(f->model, f->dataset, f->data_dir, f->threads, f->float_path); }};
}
}  // namespace fewmul_cli
