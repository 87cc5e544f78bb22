// fewmul info: what a model file holds.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli_common.hpp"

namespace fewmul_cli {
namespace {

int run_info(const std::string& model_path) {
  fewmul::model m = fewmul::load_model(model_path);
  const auto& pre = m.meta.preprocess;
  std::string steps;  // in the order preprocessing applies them
  auto step = [&steps](bool on, const std::string& name) {
    if (on) steps += (steps.empty() ? "" : "+") + name;
  };
  step(pre.pm1, "pm1 ([-1, 1])");
  step(!pre.center_mean.empty(), "center");
  step(pre.gcn, "gcn");
  step(pre.lcn_channels > 0,
       "lcn(" + std::to_string(pre.lcn_channels) + " channel" + (pre.lcn_channels == 1 ? ")" : "s)"));
  step(!pre.zca_mean.empty(), "zca");
  std::printf(
      "model: %s\ndataset: %s\nmethod: %s\ninput: %ux%ux%u, scale %g\npreprocessing: %s\nclasses: %zu\nlayers: %s\n",
      model_path.c_str(), m.meta.dataset.c_str(), m.meta.method.c_str(), m.meta.width, m.meta.height, m.meta.channels,
      static_cast<double>(m.meta.input_scale), steps.empty() ? "none" : steps.c_str(), m.net.output_size(),
      m.net.describe().c_str());
  std::printf("file bytes: %ju, float32 parameter bytes: %zu\n",
              static_cast<std::uintmax_t>(std::filesystem::file_size(model_path)),
              fewmul::float32_parameter_bytes(m.net));
  // Which layers run with bit-plane activations (eval and predict use this path).
  if (m.packed) {
    std::printf("packed inference (%zu bytes): %s\n", m.packed->bytes(), m.packed->describe().c_str());
  } else {
    std::string why;
    try {
      fewmul::packed_network p(m.net);
    } catch (const fewmul::error& e) {
      why = e.what();
    }
    std::printf("packed inference: no, every layer runs the float path (%s)\n", why.c_str());
  }
  return 0;
}

}  // namespace

command add_info_command(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  CLI::App* info = app.add_subcommand("info", "Describe a model file");
  info->add_option("model", *model, "Model file")->required()->check(CLI::ExistingFile);
  return {info, [model] { return run_info(*model); }};
}
}  // namespace fewmul_cli
