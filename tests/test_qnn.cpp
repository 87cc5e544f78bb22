// QNN pieces: k-bit levels and bit planes, k-bit dense layers against a double-precision reference,
// k-bit activations, dropout, shift-based batch norm and AdaMax against their float versions, and
// packed inference (fused batch norm + activation thresholds) against network::forward.
#include <doctest/doctest.h>

#include <cmath>

#include "fewmul/packed_mlp.hpp"
#include "fewmul/train.hpp"
#include "layers/layer_io.hpp"
#include "train/optimizer.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("k-bit levels: nearest level, bit planes hold the level's bits, values round-trip") {
  for (int bits = 1; bits <= 8; ++bits) {
    CAPTURE(bits);
    const std::uint32_t top = (1u << bits) - 1;
    for (std::uint32_t u = 0; u <= top; ++u) CHECK(kernels::level_of(kernels::level_value(u, bits), bits) == u);
    CHECK(kernels::level_value(0, bits) == -1.0f);
    CHECK(kernels::level_value(top, bits) == 1.0f);
    const auto x = random_floats(500, static_cast<std::uint32_t>(bits));
    for (float v : x) {
      const float scaled = v * 1.7f;  // some beyond [-1, 1]
      const float got = kernels::level_value(kernels::level_of(scaled, bits), bits);
      const float clipped = std::clamp(scaled, -1.0f, 1.0f);
      // Nearest level: no level is closer (ties either way).
      for (std::uint32_t u = 0; u <= top; ++u)
        CHECK(std::fabs(got - clipped) <= std::fabs(kernels::level_value(u, bits) - clipped) + 1e-6f);
    }
    // Planes: rows x cols with a ragged column count, padding bits zero.
    const std::size_t rows = 3, cols = 70, words = kernels::words_for(cols);
    std::vector<std::uint64_t> planes(static_cast<std::size_t>(bits) * rows * words, ~0ull);
    kernels::pack_levels(x.data(), rows, cols, cols, bits, planes.data(), rows * words, words);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < words * 64; ++c)
        for (int b = 0; b < bits; ++b) {
          const bool bit = (planes[(static_cast<std::size_t>(b) * rows + r) * words + c / 64] >> (c % 64)) & 1u;
          const bool want = c < cols && ((kernels::level_of(x[r * cols + c], bits) >> b) & 1u);
          CHECK(bit == want);
        }
  }
}

namespace {

// y = x Wq^T in double, with Wq the layer's k-bit weights (from a packed-model round trip).
std::vector<double> reference_product(const std::vector<float>& x, std::size_t rows, const std::vector<float>& w,
                                      std::size_t in, std::size_t out, int weight_bits) {
  std::vector<double> y(rows * out, 0.0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i)
        y[r * out + o] += static_cast<double>(x[r * in + i]) *
                          kernels::level_value(kernels::level_of(w[o * in + i], weight_bits), weight_bits);
  return y;
}

}  // namespace

TEST_CASE(
    "k-bit dense layers: float inputs (masked adds per plane) and k-bit inputs (XNOR per plane pair) match a double "
    "reference") {
  const isa saved = active_isa();
  for (isa which : isas_under_test()) {
    force_isa(which);
    for (int wbits : {2, 3, 8})
      for (int abits : {0, 1, 2, 4})
        for (std::size_t in : {1u, 63u, 64u, 65u, 200u}) {
          const std::size_t out = in == 200 ? 130 : 17, rows = 5;
          CAPTURE(isa_label(which));
          CAPTURE(wbits);
          CAPTURE(abits);
          CAPTURE(in);
          runtime rt(3);
          auto options = dense_options_for(method::qnn, -4, 3, wbits);
          auto l = make_dense(in, out, options, 11);
          l->set_input_bits(abits, abits);
          matrix x(rows, in), y;
          x.data = random_floats(rows * in, static_cast<std::uint32_t>(in + 7 * wbits + abits));
          if (abits > 0)
            for (float& v : x.data) v = kernels::level_value(kernels::level_of(v, abits), abits);
          l->forward(
              x, y,
              step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = false});
          const auto want = reference_product(x.data, rows, l->parameters()[0]->value, in, out, wbits);
          double worst = 0;
          for (std::size_t i = 0; i < want.size(); ++i)
            worst = std::max(worst, std::fabs(y.data[i] - want[i]) / (1.0 + std::fabs(want[i])));
          CHECK(worst < 2e-5);
        }
  }
  force_isa(saved);
}

TEST_CASE("k-bit activation: levels forward, straight-through gradient, unbiased stochastic rounding") {
  runtime rt(2);
  auto l = make_quantized_activation(6, 2);
  CHECK(l->output_bits(true) == 2);
  matrix x(1, 6), y, dx, dy(1, 6);
  const float values[] = {-3.0f, -0.9f, -0.2f, 0.2f, 0.5f, 1.5f};
  for (std::size_t c = 0; c < 6; ++c) x.at(0, c) = values[c];
  for (auto& v : dy.data) v = 0.5f;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  l->forward(x, y, ctx);
  l->backward(x, y, dy, &dx, ctx);
  const float want[] = {-1.0f, -1.0f, -1.0f / 3.0f, 1.0f / 3.0f, 1.0f / 3.0f, 1.0f};  // levels -1, -1/3, 1/3, 1
  const float want_dx[] = {0.0f, 0.5f, 0.5f, 0.5f, 0.5f, 0.0f};
  for (std::size_t c = 0; c < 6; ++c) {
    CHECK(y.at(0, c) == want[c]);
    CHECK(dx.at(0, c) == want_dx[c]);
  }
  auto s = make_quantized_activation(1, 3, true);
  const std::size_t rows = 40000;
  matrix xs(rows, 1), ys;
  for (auto& v : xs.data) v = 0.3f;
  s->forward(xs, ys,
             step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 5, .step = 2, .training = true});
  double mean = 0;
  for (float v : ys.data) mean += v;
  CHECK(mean / rows == doctest::Approx(0.3).epsilon(0.02));
}

TEST_CASE("dropout: drops about p in training, scales the rest, backward uses the same mask, identity at inference") {
  runtime rt(2);
  auto l = make_dropout(1000, 0.25f);
  matrix x(20, 1000), y, dx;
  for (auto& v : x.data) v = 1.0f;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 4, .training = true};
  l->forward(x, y, ctx);
  l->backward(x, y, x, &dx, ctx);
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < y.data.size(); ++i) {
    dropped += y.data[i] == 0.0f;
    CHECK((y.data[i] == 0.0f || y.data[i] == doctest::Approx(1.0f / 0.75f)));
    CHECK(dx.data[i] == y.data[i]);
  }
  CHECK(static_cast<double>(dropped) / y.data.size() == doctest::Approx(0.25).epsilon(0.05));
  l->forward(x, y,
             step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 4, .training = false});
  CHECK(y.data == x.data);
}

TEST_CASE("AP2 rounds to the power of two nearest in log scale") {
  CHECK(ap2(0.0f) == 0.0f);
  CHECK(ap2(1.0f) == 1.0f);
  CHECK(ap2(-3.0f) == -4.0f);
  CHECK(ap2(1.4142f) == 1.0f);
  CHECK(ap2(1.4143f) == 2.0f);
  CHECK(ap2(0.3f) == 0.25f);
  CHECK(ap2(1e-40f) > 0.0f);  // subnormal
  for (float v : random_floats(2000, 9)) {
    const float x = v * 1000.0f;
    if (x == 0.0f) continue;
    const float r = ap2(x);
    int e = 0;
    CHECK(std::frexp(std::fabs(r), &e) == 0.5f);  // a power of two
    CHECK((r > 0) == (x > 0));
    CHECK(std::fabs(std::log2(std::fabs(x / r))) <= 0.5f + 1e-6f);
  }
}

TEST_CASE("shift-based batch norm stays within the AP2 factors of float batch norm") {
  runtime rt(2);
  const std::size_t rows = 300, n = 40;
  matrix x(rows, n), y_float, y_shift, dy(rows, n), dx_float, dx_shift;
  const auto r = random_floats(rows * n, 21);
  for (std::size_t i = 0; i < r.size(); ++i) x.data[i] = 3.0f * r[i] + static_cast<float>(i % n) * 0.1f;
  dy.data = random_floats(rows * n, 22);
  auto plain = make_batch_norm(n), shifted = make_shift_batch_norm(n);
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  plain->forward(x, y_float, ctx);
  shifted->forward(x, y_shift, ctx);
  plain->backward(x, y_float, dy, &dx_float, ctx);
  shifted->backward(x, y_shift, dy, &dx_shift, ctx);
  // variance within 2^(+-1/2), 1/std within 2^(+-1/4), then AP2: within 2^(+-3/4) in all.
  for (std::size_t i = 0; i < y_float.data.size(); ++i) {
    if (std::fabs(y_float.data[i]) < 1e-3f) continue;
    const double ratio = y_shift.data[i] / y_float.data[i];
    CHECK(ratio >= std::pow(2.0, -0.75) - 1e-6);
    CHECK(ratio <= std::pow(2.0, 0.75) + 1e-6);
  }
  for (float v : dx_shift.data) CHECK(std::isfinite(v));
  CHECK(shifted->describe().find("shift") != std::string::npos);
}

TEST_CASE("shift-based AdaMax: each step within the AP2 factors of AdaMax, and both minimize a quadratic") {
  runtime rt(1);
  auto run = [&](optimizer_kind kind, std::vector<std::vector<float>>& steps) {
    parameter p;
    p.value = {1.5f, -1.0f, 0.5f, 2.0f};
    p.grad.assign(4, 0.0f);
    detail::optimizer opt(kind, 0.0f, {&p});
    for (int t = 0; t < 1000; ++t) {
      for (std::size_t i = 0; i < 4; ++i) p.grad[i] = 2.0f * p.value[i];  // d/dw of w^2
      const std::vector<float> before = p.value;
      opt.step(0.05f, rt, kernels::active_kernels());
      if (t == 0) {
        steps.emplace_back();
        for (std::size_t i = 0; i < 4; ++i) steps.back().push_back(p.value[i] - before[i]);
      }
    }
    return p.value;
  };
  std::vector<std::vector<float>> float_steps, shift_steps;
  const auto end_float = run(optimizer_kind::adamax, float_steps);
  const auto end_shift = run(optimizer_kind::shift_adamax, shift_steps);
  for (std::size_t i = 0; i < 4; ++i) {
    const double ratio = shift_steps[0][i] / float_steps[0][i];
    CHECK(ratio >= 0.5 - 1e-6);
    CHECK(ratio <= 2.0 + 1e-6);
    CHECK(std::fabs(end_float[i]) < 0.2f);
    CHECK(std::fabs(end_shift[i]) < 0.2f);
  }
}

namespace {

// A network with random weights and random batch-norm statistics, including negative and zero scales.
network random_qnn(std::size_t in, const std::vector<std::size_t>& hidden, int wbits, int abits, bool shift_bn,
                   std::uint32_t seed) {
  network_architecture arch;
  arch.height = 1;
  arch.width = static_cast<std::uint32_t>(in);
  arch.channels = 1;
  arch.hidden = hidden;
  arch.outputs = 10;
  arch.act = activation::quantized;
  arch.activation_bits = abits;
  arch.shift_batch_norm = shift_bn;
  arch.dropout_hidden = 0.3f;  // identity at inference; the compiler skips it
  network net = make_network(arch, dense_options_for(method::qnn, -4, 3, wbits), seed);
  std::uint32_t s = seed;
  for (const auto& l : net.layers()) {
    if (l->parameters().size() != 2) continue;  // batch norm: gamma, beta, then mean, var buffers
    auto& gamma = l->parameters()[0]->value;
    auto& beta = l->parameters()[1]->value;
    auto& mean = *l->buffers()[0];
    auto& var = *l->buffers()[1];
    const auto r = random_floats(gamma.size() * 4, ++s);
    // A layer's sums are of the order of sqrt(fan-in).
    const float spread = std::sqrt(static_cast<float>(in));
    for (std::size_t f = 0; f < gamma.size(); ++f) {
      gamma[f] = f % 7 == 3 ? 0.0f : r[4 * f] * 2.0f;
      beta[f] = r[4 * f + 1];
      mean[f] = r[4 * f + 2] * spread;
      var[f] = (std::fabs(r[4 * f + 3]) + 0.1f) * spread * spread;
    }
  }
  return net;
}

}  // namespace

TEST_CASE("packed inference: thresholds reproduce network::forward bit for bit on float inputs") {
  runtime rt(3);
  const isa saved = active_isa();
  for (isa which : isas_under_test()) {
    force_isa(which);
    for (int wbits : {1, 2})
      for (int abits : {1, 2, 3})
        for (bool shift_bn : {false, true})
          for (std::size_t width : {1u, 63u, 64u, 65u, 130u}) {
            CAPTURE(isa_label(which));
            CAPTURE(wbits);
            CAPTURE(abits);
            CAPTURE(shift_bn);
            CAPTURE(width);
            network net = random_qnn(37, {width, width + 3}, wbits, abits, shift_bn, static_cast<std::uint32_t>(width));
            packed_mlp packed(net);
            matrix x(33, 37);
            x.data = random_floats(x.data.size(), static_cast<std::uint32_t>(width * 5 + 1));
            const matrix& want = net.forward(
                x,
                step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false});
            std::vector<float> got(33 * 10);
            packed.run(x.data.data(), 33, got.data(), rt);
            CHECK(!packed.last_run_used_input_bytes());
            CHECK(same_bits(got, want.data));
          }
  }
  force_isa(saved);
}

TEST_CASE("packed inference on input bytes: 8 bit planes, exact where the float sums are exact") {
  runtime rt(2);
  for (int wbits : {1, 2}) {
    CAPTURE(wbits);
    network net = random_qnn(100, {70, 64}, wbits, 1, false, 5);
    packed_mlp packed(net);
    matrix x(40, 100);
    // Inputs 0 or 1: every float sum is exact, so both paths agree bit for bit.
    const auto r = random_floats(x.data.size(), 77);
    for (std::size_t i = 0; i < r.size(); ++i) x.data[i] = r[i] > 0.0f ? 1.0f : 0.0f;
    const matrix& want = net.forward(
        x, step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false});
    std::vector<float> got(40 * 10);
    packed.run(x.data.data(), 40, got.data(), rt);
    CHECK(packed.last_run_used_input_bytes());
    if (wbits == 1) CHECK(same_bits(got, want.data));
    // General bytes: the first layer's integer sum is exact and the float path rounds; scores stay close.
    for (std::size_t i = 0; i < r.size(); ++i) x.data[i] = std::round((r[i] + 1.0f) * 127.5f) / 255.0f;
    const matrix& want_bytes = net.forward(
        x, step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false});
    packed.run(x.data.data(), 40, got.data(), rt);
    CHECK(packed.last_run_used_input_bytes());
    std::size_t agree = 0;
    for (std::size_t row = 0; row < 40; ++row) {
      const auto* a = got.data() + row * 10;
      const auto* b = want_bytes.data.data() + row * 10;
      agree += std::max_element(a, a + 10) - a == std::max_element(b, b + 10) - b;
    }
    CHECK(agree >= 36);
  }
}

TEST_CASE("packed inference refuses networks it cannot compile, naming the layer") {
  network fp = make_mlp(20, {16}, 4, dense_options_for(method::fp32), activation::relu, 1);
  CHECK_THROWS_WITH_AS(packed_mlp{fp}, doctest::Contains("layer 0 (dense 20->16 fp32)"), error);
  network relu = make_mlp(20, {16}, 4, dense_options_for(method::bnn), activation::relu, 1);
  CHECK_THROWS_WITH_AS(packed_mlp{relu}, doctest::Contains("sign or k-bit activation"), error);
}

TEST_CASE("convolutions on quantized inputs: XNOR forward with the padding correction matches the masked-add path") {
  const isa saved = active_isa();
  for (isa which : isas_under_test()) {
    force_isa(which);
    for (std::size_t kernel : {1u, 3u, 5u})
      for (bool same : {true, false})
        for (std::size_t c_in : {1u, 63u, 65u})
          for (int bits : {1, 2}) {
            CAPTURE(isa_label(which));
            CAPTURE(kernel);
            CAPTURE(same);
            CAPTURE(c_in);
            CAPTURE(bits);
            conv_shape shape;
            shape.height = 6;
            shape.width = 5;
            shape.in_channels = c_in;
            shape.out_channels = 17;
            shape.kernel = kernel;
            shape.same_padding = same;
            const auto options = bits == 1 ? dense_options_for(method::bnn) : dense_options_for(method::qnn, -4, 3, 2);
            auto plain = make_conv2d(shape, options, 9), xnor = make_conv2d(shape, options, 9);
            xnor->set_input_bits(bits, bits);
            runtime rt(3);
            matrix x(3, plain->input_size()), y1, y2;
            x.data = random_floats(x.data.size(), static_cast<std::uint32_t>(kernel * 100 + c_in));
            for (float& v : x.data) v = kernels::level_value(kernels::level_of(v, bits), bits);
            for (bool training : {true, false}) {
              const step_context ctx{
                  .rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 2, .training = training};
              plain->forward(x, y1, ctx);
              xnor->forward(x, y2, ctx);
              if (bits == 1) {
                CHECK(same_bits(y1.data, y2.data));  // integer sums: exact on both paths
              } else {
                double worst = 0;
                for (std::size_t i = 0; i < y1.data.size(); ++i)
                  worst = std::max(
                      worst, static_cast<double>(std::fabs(y1.data[i] - y2.data[i])) / (1.0 + std::fabs(y1.data[i])));
                // The float path rounds once per add: a relative error of up to K ulps.
                CHECK(worst < 1.2e-7 * static_cast<double>(kernel * kernel * c_in) + 1e-6);
              }
            }
          }
  }
  force_isa(saved);
}
