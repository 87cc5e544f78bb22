// fewmul export: a checkpoint's best model as a model file.
#include <cstdio>

#include "cli_common.hpp"

namespace fewmul_cli {
namespace {

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

}  // namespace

command add_export_command(CLI::App& app) {
  auto paths = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* exporter = app.add_subcommand("export", "Export a checkpoint's best model as a packed inference model");
  exporter->add_option("checkpoint", paths->first, "Training checkpoint")->required()->check(CLI::ExistingFile);
  exporter->add_option("model", paths->second, "Model file to write")->required();
  return {exporter, [paths] { return run_export(paths->first, paths->second); }};
}
}  // namespace fewmul_cli
