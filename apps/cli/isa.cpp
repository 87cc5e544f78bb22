// fewmul isa: the kernel ISAs this CPU runs.
#include <iostream>

#include "cli_common.hpp"

namespace fewmul_cli {

command add_isa_command(CLI::App& app) {
  CLI::App* isas = app.add_subcommand("isa", "List the kernel ISAs this CPU supports (best last)");
  return {isas, [] {
            for (fewmul::isa i : fewmul::supported_isas()) std::cout << fewmul::isa_name(i) << "\n";
            return 0;
          }};
}

}  // namespace fewmul_cli
