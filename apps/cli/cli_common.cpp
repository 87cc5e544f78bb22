// The CLI's shared helpers (see cli_common.hpp).
#include "cli_common.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

namespace fewmul_cli {

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const fewmul::method_traits& t : fewmul::methods()) names.emplace_back(t.name);
  return names;
}

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

CLI::Validator number_in(double min, double max) {
  char name[80];
  std::snprintf(name, sizeof name, "NUMBER in [%g, %g]", min, max);
  return CLI::Validator([=](std::string& text) { return fewmul::number_text_problem(text, min, max); }, name);
}

CLI::Validator whole_in(std::uint64_t min, std::uint64_t max) {
  return CLI::Validator([=](std::string& text) { return fewmul::whole_text_problem(text, min, max); },
                        "WHOLE NUMBER in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
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

std::string data_dir_for(const std::string& dataset, const std::string& given) {
  return given.empty() ? "build/data/" + dataset : given;
}

loaded_data load_data(const std::string& dataset, const std::string& dir, bool svhn_extra, bool test_only) {
  loaded_data d;
  if (dataset == "mnist") {
    fewmul::mnist_data m = fewmul::load_mnist(dir);
    d.train = std::move(m.train);
    d.test = std::move(m.test);
  } else if (dataset == "cifar10" && test_only) {  // eval: not the 600 MB of training floats
    const std::filesystem::path test = std::filesystem::path(dir) / "test_batch.bin";
    if (!std::filesystem::exists(test))
      throw fewmul::error(test.string() + ": no such file; fetch CIFAR-10 with apps/scripts/fetch-data.sh cifar10");
    d.test = fewmul::load_cifar10_batch(test.string());
  } else if (dataset == "cifar10") {
    fewmul::cifar10_data c = fewmul::load_cifar10(dir);
    d.train = std::move(c.train);
    d.test = std::move(c.test);
  } else if (dataset == "svhn") {
    const std::filesystem::path base(dir);
    if (!test_only) d.train = fewmul::load_svhn_mat((base / "train_32x32.mat").string());
    if (svhn_extra && !test_only)  // the papers' split: the balanced 6,000 validation images come last
      d.train = fewmul::svhn_balanced_split(d.train, fewmul::load_svhn_mat((base / "extra_32x32.mat").string()));
    d.test = fewmul::load_svhn_mat((base / "test_32x32.mat").string());
  } else {
    throw fewmul::error("unknown dataset '" + dataset + "' (mnist, cifar10 or svhn)");
  }
  d.meta = metadata_of(dataset, d.test);
  return d;
}

fewmul::model_metadata metadata_of(const std::string& dataset, const fewmul::dataset& test) {
  fewmul::model_metadata meta;
  meta.dataset = dataset;
  if (dataset == "cifar10")
    meta.class_names = fewmul::cifar10_class_names();
  else
    for (int c = 0; c < 10; ++c) meta.class_names.push_back(std::to_string(c));
  meta.height = test.height;
  meta.width = test.width;
  meta.channels = test.channels;
  meta.input_scale = 1.0f / 255.0f;
  return meta;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec)) return std::filesystem::equivalent(a, b, ec);
  return std::filesystem::weakly_canonical(a, ec) == std::filesystem::weakly_canonical(b, ec);
}

void check_output(const std::string& path, fewmul::file_kind kind, const std::string& flag) {
  for (const std::string& stale : fewmul::check_output_path(path, kind, flag))
    std::fprintf(stderr, "fewmul: removed %s, the temporary file of a run that was killed\n", stale.c_str());
}

}  // namespace fewmul_cli
