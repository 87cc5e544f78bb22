// update_weights: one optimizer step over a layer's weights, update_weights/<isa>/<rule>[_2parts]/<weights>; bytes/s
// counts the arrays each rule reads and writes (memory-bound beyond the caches).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "kernel_bench.hpp"

namespace fewmul_bench {

using namespace fewmul;

namespace {

void update_weights_bench(benchmark::State& state, isa which, kernels::update_rule rule, std::size_t n,
                          std::size_t parts) {
  if (skip_unsupported(state, which)) return;
  const auto& k = kernels::kernels_for(which);
  std::vector<float> w = floats(n, 1), g = floats(parts * n, 2), m1(n, 0.0f), m2(n, 0.0f);
  const kernels::update_weights_params p{.rule = rule,
                                         .n = n,
                                         .w = w.data(),
                                         .g = g.data(),
                                         .g_parts = parts,
                                         .g_stride = n,
                                         .m1 = m1.data(),
                                         .m2 = m2.data(),
                                         .rate = 1e-6f,
                                         .momentum = 0.9f,
                                         .correction1 = 0.5f,
                                         .correction2 = 0.5f,
                                         .lo = -1.0f,
                                         .hi = 1.0f};
  for (auto _ : state) {
    k.update_weights(p);
    benchmark::ClobberMemory();
  }
  const double rule_arrays = rule == kernels::update_rule::sgd ? 3 : rule == kernels::update_rule::momentum ? 5 : 7;
  const double arrays = static_cast<double>(parts - 1) + rule_arrays;  // every part of the gradient is read
  state.counters["bytes_per_s"] = benchmark::Counter(
      arrays * 4.0 * static_cast<double>(n) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace

void register_update_weights(isa which) {
  const std::string isa_text(isa_name(which));
  const std::pair<kernels::update_rule, const char*> rules[] = {{kernels::update_rule::sgd, "sgd"},
                                                                {kernels::update_rule::adam, "adam"}};
  for (const auto& [rule, name] : rules)
    for (const std::size_t n : {std::size_t{1} << 20, std::size_t{4096} * 4096})
      benchmark::RegisterBenchmark(("update_weights/" + isa_text + "/" + name + "/" + std::to_string(n)).c_str(),
                                   update_weights_bench, which, rule, n, std::size_t{1})
          ->Unit(benchmark::kMicrosecond);
  // The gradient of two minibatch parts folded in the update's pass (the optimizer's deferred fold).
  const std::size_t n = std::size_t{1} << 20;
  benchmark::RegisterBenchmark(("update_weights/" + isa_text + "/sgd_2parts/" + std::to_string(n)).c_str(),
                               update_weights_bench, which, kernels::update_rule::sgd, n, std::size_t{2})
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace fewmul_bench
