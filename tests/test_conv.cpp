// Convolution, max-pooling and per-channel batch norm: against direct loops, across threads and ISAs.
#include <doctest/doctest.h>

#include <array>

#include <cmath>
#include <filesystem>

#include "fewmul/error.hpp"
#include "fewmul/model.hpp"
#include "fewmul/train.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

matrix random_matrix(std::size_t rows, std::size_t cols, std::uint32_t seed) {
  matrix m(rows, cols);
  m.data = random_floats(rows * cols, seed);
  return m;
}

// The weight the layer uses for W[o][(ky*k + kx)*cin + c] (fp32 value, or its deterministic sample).
double used_weight(const std::vector<float>& w, std::size_t i, method m) {
  if (m == method::fp32) return w[i];
  if (m == method::bc) return w[i] >= 0.0f ? 1.0 : -1.0;
  return std::fabs(w[i]) >= 0.5f ? (w[i] > 0 ? 1.0 : -1.0) : 0.0;
}

// Direct convolution in double, channel-last, straight from the definition.
double direct_conv(const matrix& x, std::size_t b, const conv_shape& s, const std::vector<float>& w, method m,
                   std::size_t oy, std::size_t ox, std::size_t o) {
  const long pad = s.same_padding ? static_cast<long>(s.kernel / 2) : 0;
  double sum = 0;
  for (std::size_t ky = 0; ky < s.kernel; ++ky)
    for (std::size_t kx = 0; kx < s.kernel; ++kx) {
      const long iy = static_cast<long>(oy + ky) - pad, ix = static_cast<long>(ox + kx) - pad;
      if (iy < 0 || ix < 0 || iy >= static_cast<long>(s.height) || ix >= static_cast<long>(s.width)) continue;
      for (std::size_t c = 0; c < s.in_channels; ++c) {
        const std::size_t wi = ((o * s.kernel + ky) * s.kernel + kx) * s.in_channels + c;
        sum += used_weight(w, wi, m) *
               x.at(b, (static_cast<std::size_t>(iy) * s.width + static_cast<std::size_t>(ix)) * s.in_channels + c);
      }
    }
  return sum;
}

conv_shape shape_of(std::size_t h, std::size_t w, std::size_t cin, std::size_t cout, std::size_t k, bool same) {
  conv_shape s;
  s.height = h;
  s.width = w;
  s.in_channels = cin;
  s.out_channels = cout;
  s.kernel = k;
  s.same_padding = same;
  return s;
}

}  // namespace

TEST_CASE("convolution forward and input gradient match direct loops on ragged shapes") {
  runtime rt(3);
  // Ragged channel counts around the 64-bit word and the kernels' column tiles. Binary weights on same-padded
  // maps with a multiple of 4 output channels take the input gradient on conv_binary (flipped kernel, input
  // channels not a multiple of 64 to shift bits across words): the 1st, 6th and 7th shapes.
  const conv_shape shapes[] = {shape_of(5, 7, 3, 4, 3, true),   shape_of(6, 6, 1, 65, 3, false),
                               shape_of(4, 3, 64, 63, 1, true), shape_of(9, 5, 2, 1, 5, true),
                               shape_of(3, 3, 7, 129, 3, true), shape_of(6, 5, 70, 8, 3, true),
                               shape_of(5, 4, 100, 12, 5, true)};
  for (const conv_shape& s : shapes)
    for (method m : {method::fp32, method::bc, method::tc}) {
      CAPTURE(s.height);
      CAPTURE(s.in_channels);
      CAPTURE(s.out_channels);
      CAPTURE(method_name(m));
      auto options = dense_options_for(m);
      options.training_sampling = kernels::sample_mode::deterministic;
      auto l = make_conv2d(s, options, 5);
      const std::vector<float>& w = l->parameters()[0]->value;
      const std::size_t batch = 3;
      const matrix x = random_matrix(batch, l->input_size(), 6);
      const matrix dy = random_matrix(batch, l->output_size(), 7);
      const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 1, .training = true};
      matrix y, dx;
      l->forward(x, y, ctx);
      l->backward(x, y, dy, &dx, ctx);
      for (std::size_t b = 0; b < batch; ++b)
        for (std::size_t oy = 0; oy < s.out_height(); ++oy)
          for (std::size_t ox = 0; ox < s.out_width(); ++ox)
            for (std::size_t o = 0; o < s.out_channels; ++o)
              CHECK(y.at(b, (oy * s.out_width() + ox) * s.out_channels + o) ==
                    doctest::Approx(direct_conv(x, b, s, w, m, oy, ox, o)).epsilon(1e-4).scale(10));
      // dx = adjoint of the forward map: <dy, conv(x')> = <dx, x'> for every x'; check with unit inputs.
      for (std::size_t i = 0; i < l->input_size(); i += 1 + l->input_size() / 40) {
        matrix unit(1, l->input_size());
        unit.data[i] = 1.0f;
        matrix yu;
        l->forward(unit, yu, ctx);
        double want = 0;
        for (std::size_t j = 0; j < yu.cols; ++j) want += static_cast<double>(yu.at(0, j)) * dy.at(0, j);
        CHECK(dx.at(0, i) == doctest::Approx(want).epsilon(1e-4).scale(10));
      }
    }
}

TEST_CASE("convolution weight gradient matches dW = sum over positions of dy x^T") {
  runtime rt(2);
  // Same padding with 3 channels (taps shorter than a vector), 64 channels (whole vector panels of the
  // implicit im2col) and 32 channels with 40 outputs (panels of two segments), valid padding with an even
  // kernel (Lin et al.'s 2x2); fp32 (floats through the indirection buffer) and bc+qbp on inputs that are
  // powers of two or zero (their codes, read through the indirection buffer, are exact whatever the random
  // rounding draws).
  for (const method m : {method::fp32, method::bc_qbp})
    for (const conv_shape& s : {shape_of(5, 4, 3, 6, 3, true), shape_of(4, 3, 64, 5, 3, true),
                                shape_of(5, 4, 3, 6, 2, false), shape_of(4, 4, 32, 40, 3, true)}) {
      CAPTURE(static_cast<int>(m));
      CAPTURE(s.in_channels);
      CAPTURE(s.kernel);
      auto l = make_conv2d(s, dense_options_for(m), 9);
      matrix x = random_matrix(2, l->input_size(), 1);
      const matrix dy = random_matrix(2, l->output_size(), 2);
      if (m == method::bc_qbp)
        for (std::size_t i = 0; i < x.data.size(); ++i)
          x.data[i] = i % 3 == 0 ? 0.0f : std::ldexp(i % 2 ? 1.0f : -1.0f, static_cast<int>(i % 5) - 3);
      const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 3, .step = 1, .training = true};
      matrix y;
      l->forward(x, y, ctx);
      l->backward(x, y, dy, nullptr, ctx);
      const auto& g = l->parameters()[0]->grad;
      const std::size_t k = s.kernel, c_in = s.in_channels, c_out = s.out_channels;
      const long pad = s.same_padding ? static_cast<long>(k - 1) / 2 : 0;
      const std::size_t ho = s.out_height(), wo = s.out_width();
      for (std::size_t o = 0; o < c_out; ++o)
        for (std::size_t ky = 0; ky < k; ++ky)
          for (std::size_t kx = 0; kx < k; ++kx)
            for (std::size_t c = 0; c < c_in; ++c) {
              double want = 0;
              for (std::size_t b = 0; b < 2; ++b)
                for (std::size_t oy = 0; oy < ho; ++oy)
                  for (std::size_t ox = 0; ox < wo; ++ox) {
                    const long iy = static_cast<long>(oy + ky) - pad, ix = static_cast<long>(ox + kx) - pad;
                    if (iy < 0 || ix < 0 || iy >= static_cast<long>(s.height) || ix >= static_cast<long>(s.width))
                      continue;
                    want += static_cast<double>(dy.at(b, (oy * wo + ox) * c_out + o)) *
                            x.at(b, (static_cast<std::size_t>(iy) * s.width + static_cast<std::size_t>(ix)) * c_in + c);
                  }
              CHECK(g[((o * k + ky) * k + kx) * c_in + c] == doctest::Approx(want).epsilon(1e-4).scale(10));
            }
    }
}

TEST_CASE("QBP rounds a convolution's input once: every tap reading a pixel sees the same code") {
  // One nonzero pixel, 0.75, between the powers 0.5 and 1: it rounds to either. With dy = 1 at every output
  // position of a 3x3 "same" convolution the pixel is read once per tap, so dW[tap] = the pixel's code for
  // all 9 taps; rounding each im2col copy separately would give different taps different codes.
  runtime rt(2);
  const conv_shape s = shape_of(5, 5, 1, 1, 3, true);
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    auto l = make_conv2d(s, dense_options_for(method::bc_qbp), 4);
    matrix x(1, l->input_size()), dy(1, l->output_size());
    x.at(0, 2 * 5 + 2) = 0.75f;
    std::fill(dy.data.begin(), dy.data.end(), 1.0f);
    const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = seed, .step = 1, .training = true};
    matrix y;
    l->forward(x, y, ctx);
    l->backward(x, y, dy, nullptr, ctx);
    const auto& g = l->parameters()[0]->grad;
    CAPTURE(seed);
    CHECK((g[0] == 0.5f || g[0] == 1.0f));
    for (std::size_t tap = 1; tap < 9; ++tap) CHECK(g[tap] == g[0]);
  }
}

TEST_CASE("max-pooling takes each window's maximum and routes the gradient to it") {
  runtime rt(2);
  // Odd heights and widths: the last row or column is dropped (its gradient is 0).
  for (const auto& shape : {std::array<std::size_t, 3>{5, 4, 3}, {4, 5, 3}, {5, 5, 2}, {2, 2, 17}}) {
    const std::size_t h = shape[0], w = shape[1], c = shape[2];  // not a structured binding: CAPTURE is a lambda
    CAPTURE(h);
    CAPTURE(w);
    auto l = make_max_pool(h, w, c);
    const std::size_t ho = h / 2, wo = w / 2;
    CHECK(l->output_size() == ho * wo * c);
    const matrix x = random_matrix(2, l->input_size(), 4), dy = random_matrix(2, l->output_size(), 5);
    const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
    matrix y, dx(2, l->input_size());
    std::fill(dx.data.begin(), dx.data.end(), 12345.0f);  // every element must be written
    l->forward(x, y, ctx);
    l->backward(x, y, dy, &dx, ctx);
    std::vector<float> want_dx(dx.data.size(), 0.0f);
    for (std::size_t b = 0; b < 2; ++b)
      for (std::size_t oy = 0; oy < ho; ++oy)
        for (std::size_t ox = 0; ox < wo; ++ox)
          for (std::size_t ch = 0; ch < c; ++ch) {
            std::size_t best = 0;
            float v = -1e30f;
            for (std::size_t wy = 0; wy < 2; ++wy)
              for (std::size_t wx = 0; wx < 2; ++wx) {
                const std::size_t i = ((2 * oy + wy) * w + 2 * ox + wx) * c + ch;
                if (x.at(b, i) > v) v = x.at(b, i), best = i;
              }
            CHECK(y.at(b, (oy * wo + ox) * c + ch) == v);
            want_dx[b * l->input_size() + best] = dy.at(b, (oy * wo + ox) * c + ch);
          }
    CHECK(same_bits(dx.data, want_dx));
  }
}

TEST_CASE("per-channel batch norm equals feature batch norm over (example, position) rows") {
  runtime rt(3);
  const std::size_t channels = 70, positions = 37, batch = 40;  // 1480 rows: two chunks of partial sums
  auto spatial = make_spatial_batch_norm(channels, positions);
  auto flat = make_batch_norm(channels);
  const matrix x = random_matrix(batch, channels * positions, 3), dy = random_matrix(batch, channels * positions, 4);
  matrix x_rows = x, dy_rows = dy;
  x_rows.rows = dy_rows.rows = batch * positions;
  x_rows.cols = dy_rows.cols = channels;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  matrix y1, y2, dx1, dx2;
  spatial->forward(x, y1, ctx);
  spatial->backward(x, y1, dy, &dx1, ctx);
  flat->forward(x_rows, y2, ctx);
  flat->backward(x_rows, y2, dy_rows, &dx2, ctx);
  CHECK(same_bits(y1.data, y2.data));
  CHECK(same_bits(dx1.data, dx2.data));
  CHECK(same_bits(spatial->parameters()[0]->grad, flat->parameters()[0]->grad));
  // And the normalization is right: every channel has mean ~0 and variance ~1.
  for (std::size_t c = 0; c < channels; c += 13) {
    double sum = 0, squares = 0;
    for (std::size_t r = 0; r < batch * positions; ++r) sum += y1.data[r * channels + c];
    for (std::size_t r = 0; r < batch * positions; ++r)
      squares += (y1.data[r * channels + c] - sum / 1480) * (y1.data[r * channels + c] - sum / 1480);
    CHECK(std::fabs(sum / 1480) < 1e-4);
    CHECK(squares / 1480 == doctest::Approx(1.0).epsilon(1e-3));
  }
}

namespace {

// 10x10x2 images; class = which quadrant holds a bright blob.
dataset image_blobs(std::size_t n, std::uint32_t seed) { return quadrant_blob_images(n, seed, 10); }

network small_convnet(method m, std::uint64_t seed, std::size_t wide = 6) {
  network_architecture a;
  a.height = a.width = 10;
  a.channels = 2;
  a.conv = {wide, 0, 9};
  a.hidden = {16};
  a.outputs = 4;
  return make_network(a, dense_options_for(m), seed);
}

std::vector<std::vector<float>> train_convnet(method m, int threads, std::size_t batch) {
  const dataset train_set = image_blobs(400, 1), test_set = image_blobs(100, 2);
  network net = small_convnet(m, 5, 70);  // 10x10x70 activations: BN sums over several row chunks
  train_config config;
  config.training_method = m;
  config.epochs = 1;
  config.batch = batch;
  config.threads = threads;
  config.validation = 100;
  train(net, train_set, test_set, config);
  return net.snapshot();
}

}  // namespace

TEST_CASE("convnet training is bit-identical for 1, 2 and 7 threads and on every ISA") {
  for (method m : {method::fp32, method::bc_qbp, method::tc_qbp}) {
    CAPTURE(method_name(m));
    const auto one = train_convnet(m, 1, 60);
    CHECK(one == train_convnet(m, 2, 60));
    CHECK(one == train_convnet(m, 7, 60));
  }
  const isa saved = active_isa();
  force_isa(isa::scalar);
  const auto reference = train_convnet(method::bc_qbp, 2, 60);
  for (isa which : isas_under_test()) {
    CAPTURE(isa_label(which));
    force_isa(which);
    CHECK(reference == train_convnet(method::bc_qbp, 2, 60));
  }
  force_isa(saved);
}

TEST_CASE("a convolution over several slabs equals the same convolution one example at a time") {
  // 64x64x16 -> 16 with a 3x3 kernel: 590k im2col values per example, so a batch of 9 spans slabs.
  runtime rt(2);
  const conv_shape s = shape_of(64, 64, 16, 16, 3, true);
  auto l = make_conv2d(s, dense_options_for(method::bc), 3);
  const matrix x = random_matrix(9, l->input_size(), 1), dy = random_matrix(9, l->output_size(), 2);
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 1, .step = 0, .training = true};
  matrix y, dx;
  l->forward(x, y, ctx);
  l->backward(x, y, dy, &dx, ctx);
  const std::vector<float> grad = l->parameters()[0]->grad;
  std::vector<double> grad_sum(grad.size(), 0.0);
  for (std::size_t b = 0; b < 9; ++b) {
    matrix xb(1, x.cols), dyb(1, dy.cols), yb, dxb;
    std::copy_n(x.row(b), x.cols, xb.data.begin());
    std::copy_n(dy.row(b), dy.cols, dyb.data.begin());
    l->forward(xb, yb, ctx);
    l->backward(xb, yb, dyb, &dxb, ctx);
    CHECK(std::equal(yb.data.begin(), yb.data.end(), y.row(b)));
    CHECK(std::equal(dxb.data.begin(), dxb.data.end(), dx.row(b)));
    for (std::size_t i = 0; i < grad.size(); ++i) grad_sum[i] += l->parameters()[0]->grad[i];
  }
  for (std::size_t i = 0; i < grad.size(); i += 37)
    CHECK(grad[i] == doctest::Approx(grad_sum[i]).epsilon(1e-4).scale(1));
}

TEST_CASE("a small convnet learns a spatial task with every method") {
  const dataset train_set = image_blobs(600, 1), test_set = image_blobs(200, 2);
  for (method m : {method::fp32, method::bc, method::tc, method::bc_qbp, method::tc_qbp}) {
    CAPTURE(method_name(m));
    network net = small_convnet(m, 11);
    train_config config;
    config.training_method = m;
    config.epochs = 4;
    config.batch = 50;
    config.validation = 100;
    config.lr = 0.3f;  // the binary presets (1.0) are tuned for the MNIST MLP; this toy net wants less
    const auto result = train(net, train_set, test_set, config);
    CHECK(result.test_error_at_best < 0.25);  // chance is 0.75
  }
}

TEST_CASE("a convnet model file reproduces the trained network's packed inference exactly") {
  const dataset train_set = image_blobs(300, 1), test_set = image_blobs(100, 2);
  network net = small_convnet(method::tc_qbp, 3);
  train_config config;
  config.training_method = method::tc_qbp;
  config.epochs = 1;
  config.batch = 50;
  config.validation = 50;
  train(net, train_set, test_set, config);
  model_metadata meta;
  meta.dataset = "blobs";
  meta.height = meta.width = 10;
  meta.channels = 2;
  const std::string path = (std::filesystem::temp_directory_path() / "fewmul_test_convnet.fwm").string();
  save_model(path, net, meta);
  model loaded = load_model(path);
  std::filesystem::remove(path);
  runtime rt(2);
  matrix x(test_set.size(), test_set.features);
  x.data = test_set.x;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false};
  const matrix want = net.forward(x, ctx);
  CHECK(same_bits(loaded.run(x, rt).data, want.data));
  CHECK(loaded.net.describe().find("conv3x3 10x10x2->6 same ternary(deterministic) |") == 0);
}

TEST_CASE("impossible convnet shapes are refused with clear errors") {
  network_architecture a;
  a.height = a.width = 3;
  a.channels = 1;
  a.conv = {0, 4};
  CHECK_THROWS_WITH_AS(make_network(a, dense_options_for(method::fp32), 1),
                       doctest::Contains("must follow a convolution"), fewmul::error);
  a.height = a.width = 1;
  a.conv = {4, 0};
  CHECK_THROWS_WITH_AS(make_network(a, dense_options_for(method::fp32), 1), doctest::Contains("max-pooling needs maps"),
                       fewmul::error);
  CHECK_THROWS_WITH_AS(make_conv2d(shape_of(4, 4, 1, 2, 4, true), dense_options_for(method::fp32), 1),
                       doctest::Contains("kernel size must be odd"), fewmul::error);
  CHECK_THROWS_AS(convnet_preset(32, 32, 3, 10, 0.0), fewmul::error);
  const auto preset = convnet_preset(32, 32, 3, 10, 0.25);
  CHECK(preset.conv == std::vector<std::size_t>{32, 32, 0, 64, 64, 0, 128, 128, 0});
  CHECK(preset.hidden == std::vector<std::size_t>{256, 256});
}
