// One convolution layer's training step (forward, input gradient, weight gradient) per method, timed
// side by side with the same layer in fp32 (the float reference): the counter speedup_vs_fp32 is
// fp32 time / method time measured in the same iterations.
#include <benchmark/benchmark.h>

#include <chrono>

#include "fewmul/kernels.hpp"
#include "fewmul/train.hpp"

namespace {

using namespace fewmul;

struct conv_case {
  const char* name;
  conv_shape shape;
  std::size_t batch;
};

double step_seconds(layer& l, const matrix& x, const matrix& dy, matrix& y, matrix& dx, const step_context& ctx,
                    bool inference) {
  const auto start = std::chrono::steady_clock::now();
  l.forward(x, y, ctx);
  if (!inference) l.backward(x, y, dy, &dx, ctx);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void conv_bench(benchmark::State& state, method m, conv_case c, bool inference) {
  runtime rt(static_cast<int>(state.range(0)));
  auto options = dense_options_for(m);
  auto l = make_conv2d(c.shape, options, 1);
  auto reference = make_conv2d(c.shape, dense_options_for(method::fp32), 1);
  matrix x(c.batch, l->input_size()), dy(c.batch, l->output_size()), y, dx;
  for (std::size_t i = 0; i < x.data.size(); ++i) x.data[i] = static_cast<float>((i * 7919) % 97) / 97.0f;
  if (m == method::bnn) {  // ±1 inputs from a sign layer: the XNOR forward with the padding correction
    l->set_input_bits(1, 1);
    for (float& v : x.data) v = v >= 0.5f ? 1.0f : -1.0f;
  }
  for (std::size_t i = 0; i < dy.data.size(); ++i) dy.data[i] = static_cast<float>((i * 104729) % 89) / 89.0f - 0.5f;
  std::uint64_t step = 0;
  double own = 0, fp32 = 0;
  for (auto _ : state) {
    const step_context ctx{
        .rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = step++, .training = !inference};
    const double t = step_seconds(*l, x, dy, y, dx, ctx, inference);
    own += t;
    fp32 += step_seconds(*reference, x, dy, y, dx, ctx, inference);
    state.SetIterationTime(t);
  }
  const double macs = static_cast<double>(c.batch) * c.shape.out_height() * c.shape.out_width() * c.shape.out_channels *
                      c.shape.kernel * c.shape.kernel * c.shape.in_channels * (inference ? 1.0 : 3.0);
  state.counters["MAC_per_s"] = benchmark::Counter(macs * static_cast<double>(state.iterations()) / own);
  state.counters["speedup_vs_fp32"] = fp32 / own;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * c.batch));
}

const int registered = [] {
  conv_case cases[] = {
      {"32x32x32->32", {32, 32, 32, 32, 3, true}, 50},      // CIFAR net at width 0.25, second layer
      {"16x16x128->128", {16, 16, 128, 128, 3, true}, 50},  // width 0.5, fourth layer
      {"8x8x512->512", {8, 8, 512, 512, 3, true}, 50},      // full width, sixth layer
  };
  for (const conv_case& c : cases)
    for (method m : {method::fp32, method::bc, method::tc, method::bc_qbp, method::tc_qbp, method::bnn}) {
      const std::string suffix = std::string(method_name(m)) + "/" + c.name;
      benchmark::RegisterBenchmark(("conv_train_step/" + suffix).c_str(), conv_bench, m, c, false)
          ->ArgName("threads")
          ->Arg(0)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      if (m == method::fp32 || m == method::bc || m == method::tc || m == method::bnn)
        benchmark::RegisterBenchmark(("conv_inference/" + suffix).c_str(), conv_bench, m, c, true)
            ->ArgName("threads")
            ->Arg(0)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
    }
  return 0;
}();

}  // namespace
