#pragma once
// What the inference benchmarks share (bench_train.cpp: the MLP, bench_packed_conv.cpp: the convnet): the
// fp32 reference time, and the timed loop over a network or its packed compilation with its counters.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "fewmul/packed_network.hpp"

namespace fewmul_bench {

/// Seconds per call of f, after one warm-up call.
inline double seconds_per_run(const std::function<void()>& f, int repeats) {
  f();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / repeats;
}

/// Times inference of x (its rows are the batch) through `packed` when given, else through `net`; reports
/// items/s, speedup_vs_fp32 (fp32_seconds over this time) and the packed network's bytes.
inline void time_inference(benchmark::State& state, fewmul::network& net, fewmul::packed_network* packed,
                           const fewmul::matrix& x, const fewmul::runtime& rt, const fewmul::step_context& ctx,
                           double fp32_seconds) {
  std::vector<float> scores(x.rows * net.output_size());
  auto run = [&] {
    if (packed)
      packed->run(x.data.data(), x.rows, scores.data(), rt);
    else
      benchmark::DoNotOptimize(net.forward(x, ctx).data.data());
  };
  run();
  double total = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    run();
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(t);
    total += t;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * x.rows));
  state.counters["speedup_vs_fp32"] = fp32_seconds / (total / static_cast<double>(state.iterations()));
  if (packed) state.counters["packed_bytes"] = static_cast<double>(packed->bytes());
}

}  // namespace fewmul_bench
