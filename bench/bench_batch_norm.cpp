// batch_norm: batch normalization's passes over a minibatch's [rows][features] activations,
// batch_norm/<isa>/<pass>/<rows>x<features>, pass = forward | sums_values | sums_squares | sums_gradients |
// backward, and forward+relu | sums_gradients+relu | backward+relu with a ReLU fused (one call over the whole
// array; the layer calls the same kernel per block of rows and features); bytes/s counts the arrays each pass
// reads and writes.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

struct norm_shape {
  std::size_t rows, features;
};

enum class norm_pass { forward, sums_values, sums_squares, sums_gradients, backward };
constexpr const char* pass_names[] = {"forward", "sums_values", "sums_squares", "sums_gradients", "backward"};

void batch_norm_bench(benchmark::State& state, isa which, norm_pass pass, bool relu, norm_shape s) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  const std::size_t n = s.rows * s.features, f = s.features;
  std::vector<float> x = floats(n, 1), dy = floats(n, 2), out(n), sums(2 * f);
  std::vector<float> mean = floats(f, 3), inv_std(f, 1.5f), gamma = floats(f, 4), beta = floats(f, 5);
  std::vector<float> gamma_grad = floats(f, 6), beta_grad = floats(f, 7);
  kernels::batch_norm_params p{.rows = s.rows, .features = f, .ld = f, .x = x.data(), .dy = dy.data()};
  p.out = out.data();
  p.mean = mean.data();
  p.inv_std = inv_std.data();
  p.gamma = gamma.data();
  p.beta = beta.data();
  p.gamma_grad = gamma_grad.data();
  p.beta_grad = beta_grad.data();
  p.count = static_cast<float>(s.rows);
  p.sums = sums.data();
  p.second = f;
  p.relu = relu;
  p.sum = pass == norm_pass::sums_values    ? kernels::batch_norm_sum::values
          : pass == norm_pass::sums_squares ? kernels::batch_norm_sum::squares
                                            : kernels::batch_norm_sum::gradients;
  const kernels::batch_norm_fn run = pass == norm_pass::forward    ? k.batch_norm_forward
                                     : pass == norm_pass::backward ? k.batch_norm_backward
                                                                   : k.batch_norm_sums;
  for (auto _ : state) {
    run(p);
    benchmark::ClobberMemory();
  }
  const double arrays = pass == norm_pass::backward                                       ? 3.0
                        : pass == norm_pass::forward || pass == norm_pass::sums_gradients ? 2.0
                                                                                          : 1.0;
  state.counters["bytes_per_s"] =
      benchmark::Counter(4.0 * arrays * static_cast<double>(n * state.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace

// The MNIST MLP's hidden layers at batch 200 (200 x 1024) and the CIFAR-10 convnet's first and last
// batch-normalized maps at width 0.5 and batch 200 (32x32 positions x 64 channels, 8x8 x 256).
void register_batch_norm(isa which) {
  const std::string isa_text(isa_name(which));
  for (const norm_shape s : {norm_shape{200, 1024}, norm_shape{200 * 32 * 32, 64}, norm_shape{200 * 8 * 8, 256}})
    for (const norm_pass pass : {norm_pass::forward, norm_pass::sums_values, norm_pass::sums_squares,
                                 norm_pass::sums_gradients, norm_pass::backward})
      for (const bool relu : {false, true}) {
        if (relu && (pass == norm_pass::sums_values || pass == norm_pass::sums_squares)) continue;  // no ReLU there
        benchmark::RegisterBenchmark(
            ("batch_norm/" + isa_text + "/" + pass_names[static_cast<int>(pass)] + (relu ? "+relu/" : "/") +
             std::to_string(s.rows) + "x" + std::to_string(s.features))
                .c_str(),
            batch_norm_bench, which, pass, relu, s)
            ->Unit(benchmark::kMicrosecond);
      }
}

}  // namespace fewmul_bench
