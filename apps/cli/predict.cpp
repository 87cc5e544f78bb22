// fewmul predict: the top-5 classes of one PNG image.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "data/cifar_convert.hpp"

#include "cli_common.hpp"

namespace fewmul_cli {
namespace {

int run_predict(const std::string& model_path, const std::string& image_path) {
  fewmul::model m = fewmul::load_model(model_path);
  fewmul::matrix x(1, m.net.input_size());
  x.data = fewmul_app::read_png_features(image_path, m.meta.width, m.meta.height, m.meta.channels, m.meta.input_scale);
  const fewmul::runtime rt(1);
  m.meta.preprocess.apply(x.data.data(), 1, x.cols, rt);
  const fewmul::matrix& scores = m.infer(x, rt);  // the packed path for BNN/QNN models
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

command add_predict_command(CLI::App& app) {
  auto paths = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* predict = app.add_subcommand("predict", "Top-5 classes of one PNG image");
  predict->add_option("model", paths->first, "Model file")->required()->check(CLI::ExistingFile);
  predict->add_option("image", paths->second, "PNG image of the model's input size")
      ->required()
      ->check(CLI::ExistingFile);
  return {predict, [paths] { return run_predict(paths->first, paths->second); }};
}
}  // namespace fewmul_cli
