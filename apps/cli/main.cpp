// fewmul command-line interface: one source per subcommand (train.cpp, eval.cpp, ...), registered here.
#include <csignal>
#include <cstdio>
#include <new>

#include "cli_common.hpp"
#if FEWMUL_MPI
#include "dist/mpi_job.hpp"
#endif

namespace {
// Prints "fewmul: <kind>: <message>" and returns `code`; in an MPI job, prints the message with the rank
// instead and ends every process of the job (so that none waits for this one forever).
int fail(const char* kind, const std::string& message, int code) {
#if FEWMUL_MPI
  fewmul::dist::abort_job(message, code);
#endif
  std::fprintf(stderr, "fewmul: %s: %s\n", kind, message.c_str());
  return code;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace fewmul_cli;
  CLI::App app{"fewmul: train and run neural networks with (almost) no multiplications"};
  app.require_subcommand(1);
  std::string isa_text = "auto";
  app.add_option("--isa", isa_text, "Kernel ISA: auto, scalar, sse4.2, avx2, avx512bw, avx512vpopcntdq, neon64")
      ->check(CLI::IsMember({"auto", "scalar", "sse4.2", "avx2", "avx512bw", "avx512vpopcntdq", "neon64"}));
  const command commands[] = {add_train_command(app),   add_export_command(app),         add_eval_command(app),
                              add_predict_command(app), add_info_command(app),           add_count_command(app),
                              add_isa_command(app),     add_convert_cifar10_command(app)};
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
    for (const command& c : commands)
      if (*c.app) return c.run();
    return 1;  // unreachable: CLI11 requires one subcommand
  } catch (const fewmul::error& e) {
    return fail("error", e.what(), 1);
  } catch (const std::bad_alloc&) {
    return fail("error",
                "out of memory: the network, batch or dataset does not fit in this machine's memory (try a smaller "
                "--hidden, --width or --batch)",
                1);
  } catch (const std::exception& e) {
    return fail("internal error", e.what(), 2);
  }
}
