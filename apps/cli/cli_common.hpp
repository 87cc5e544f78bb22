#pragma once
// What the subcommands of the fewmul CLI share: flag validators, the dataset loader by name, output checks.
// Each subcommand lives in its own source and registers itself through an add_*_command function below.
#include <CLI/CLI.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fewmul/fewmul.hpp"
#include "fewmul/kernels.hpp"  // the QBP exponent range the flags check, the ISA list

namespace fewmul_cli {

/// A subcommand: its CLI11 parser and what runs when it was given (returns the exit status).
struct command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

command add_train_command(CLI::App& app);
command add_export_command(CLI::App& app);
command add_eval_command(CLI::App& app);
command add_predict_command(CLI::App& app);
command add_info_command(CLI::App& app);
command add_count_command(CLI::App& app);
command add_convert_cifar10_command(CLI::App& app);
command add_isa_command(CLI::App& app);

using limits = fewmul::setting_limits;

/// Flag checks shared with the library (fewmul::setting_limits): finite, in range, no wrap; CLI11 prints
/// "<flag>: <problem>" and exits 105.
CLI::Validator number_in(double min, double max);
CLI::Validator whole_in(std::uint64_t min, std::uint64_t max);

/// The CLI spellings of the training methods (fewmul::methods()).
std::vector<std::string> method_names();

/// --hidden's comma-separated layer widths.
std::vector<std::size_t> parse_hidden(const std::string& text);

/// The progress bar on a terminal (nothing otherwise).
void print_progress(std::size_t done, std::size_t total);

struct loaded_data {
  fewmul::dataset train, test;
  fewmul::model_metadata meta;
};

/// --data, or build/data/<dataset> when it was not given.
std::string data_dir_for(const std::string& dataset, const std::string& given);
/// Loads a dataset in the official files' layout with pixels in [0, 1] (model input_scale 1/255).
/// `test_only`: the test split only where the dataset has it in its own files (CIFAR-10, SVHN).
loaded_data load_data(const std::string& dataset, const std::string& dir, bool svhn_extra, bool test_only = false);
/// What load_data records of `dataset` in a model: its name, class names, image shape (that of `test`) and scale.
fewmul::model_metadata metadata_of(const std::string& dataset, const fewmul::dataset& test);

/// Whether two paths name one file (existing or not: then by their normalized absolute paths).
bool same_file(const std::string& a, const std::string& b);
/// Checks an output path before any work (see fewmul::check_output_path) and reports the stale
/// temporaries of killed runs it removed.
void check_output(const std::string& path, fewmul::file_kind kind, const std::string& flag);

}  // namespace fewmul_cli
