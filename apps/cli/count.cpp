// fewmul count: the arithmetic of one training step per method.
#include <cstdio>

#include "cli_common.hpp"

namespace fewmul_cli {
namespace {

// Arithmetic of one training step per method: the MNIST MLP, or with a width the CIFAR-10 convnet of the
// method's paper (Lin et al.'s for fp32 and the BinaryConnect methods, the BNN paper's for bnn and qnn).
int run_count(std::size_t batch, const std::vector<std::size_t>& hidden, double convnet_width) {
  for (const fewmul::method_traits& t : fewmul::methods()) {
    const fewmul::method m = t.id;
    fewmul::network_architecture arch;
    if (convnet_width > 0) {
      arch = fewmul::convnet_preset_for(m, 32, 32, 3, 10, convnet_width);  // each method's paper's net
    } else {
      arch.height = 1;
      arch.width = 784;
      arch.channels = 1;
      arch.hidden = hidden;
      arch.outputs = 10;
    }
    arch.act = fewmul::default_activation(m);
    const fewmul::network net = fewmul::make_network(arch, fewmul::dense_options_for(m), 1);
    const fewmul::op_counts engine = net.training_ops(batch), paper = net.training_ops(batch, true);
    std::printf(
        "{\"method\": \"%s\", \"network\": \"%s\", \"batch\": %zu, \"multiplications\": %.4e, "
        "\"additions\": %.4e, \"shifts\": %.4e, \"bit_operations\": %.4e, \"paper_convention_multiplications\": "
        "%.4e}\n",
        std::string(fewmul::method_name(m)).c_str(), convnet_width > 0 ? "cifar10-convnet" : "mnist-mlp", batch,
        engine.multiplications, engine.additions, engine.shifts, engine.bit_operations, paper.multiplications);
  }
  return 0;
}

}  // namespace

command add_count_command(CLI::App& app) {
  struct flags {
    std::size_t batch = 200;
    std::string hidden = "1024,1024,1024";
    double convnet_width = 0.0;
  };
  auto f = std::make_shared<flags>();
  CLI::App* count = app.add_subcommand(
      "count", "Multiplications, additions, shifts and XNOR bit operations of one training step, per method");
  count->add_option("--batch", f->batch, "Minibatch size")->check(whole_in(1, 1000000))->capture_default_str();
  count->add_option("--hidden", f->hidden, "Hidden layer widths")->capture_default_str();
  count
      ->add_option(
          "--convnet", f->convnet_width,
          "Count the CIFAR-10 convnet of each method's paper at this width multiplier instead of the MNIST MLP")
      ->check(CLI::Range(0.01, 16.0));
  return {count, [f] { return run_count(f->batch, parse_hidden(f->hidden), f->convnet_width); }};
}
}  // namespace fewmul_cli
