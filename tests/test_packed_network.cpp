// packed_network on convnets: bit planes end to end (XNOR convolutions on channel-last packed maps,
// padding correction, pooled integer sums, fused batch norm + activation thresholds) against
// network::forward, bit for bit, on every ISA, ragged channel counts and batch-norm scales of every sign.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include <filesystem>

#include "fewmul/model.hpp"
#include "fewmul/packed_network.hpp"
#include "fewmul/train.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

struct conv_block {
  std::size_t channels, kernel;
  bool same, pool;
};

// A convnet with random weights and random batch-norm statistics (about 1 channel in 7 with gamma = 0,
// half of the others negative): convolution blocks, then dense blocks, then a dense layer of 10 scores.
network random_convnet(std::size_t h, std::size_t w, std::size_t c, const std::vector<conv_block>& blocks,
                       const std::vector<std::size_t>& hidden, int wbits, int abits, std::uint32_t seed) {
  const dense_options options = dense_options_for(abits == 1 && wbits == 1 ? method::bnn : method::qnn, -4, 3, wbits);
  network net;
  std::uint32_t s = seed;
  auto add_bn = [&](std::size_t channels, std::size_t positions, std::size_t fan_in) {
    auto bn = positions == 1 ? make_batch_norm(channels) : make_spatial_batch_norm(channels, positions);
    auto& gamma = bn->parameters()[0]->value;
    auto& beta = bn->parameters()[1]->value;
    auto& mean = *bn->buffers()[0];
    auto& var = *bn->buffers()[1];
    const auto r = random_floats(channels * 4, ++s);
    const float spread = std::sqrt(static_cast<float>(fan_in));  // sums are of the order of sqrt(fan-in)
    for (std::size_t f = 0; f < channels; ++f) {
      gamma[f] = f % 7 == 3 ? 0.0f : r[4 * f] * 2.0f;
      beta[f] = r[4 * f + 1];
      mean[f] = r[4 * f + 2] * spread;
      var[f] = (std::fabs(r[4 * f + 3]) + 0.1f) * spread * spread;
    }
    net.add(std::move(bn));
  };
  auto add_activation = [&](std::size_t n) {
    net.add(abits == 1 ? make_sign(n) : make_quantized_activation(n, abits));
  };
  for (const conv_block& b : blocks) {
    conv_shape shape;
    shape.height = h;
    shape.width = w;
    shape.in_channels = c;
    shape.out_channels = b.channels;
    shape.kernel = b.kernel;
    shape.same_padding = b.same;
    net.add(make_conv2d(shape, options, ++s));
    h = shape.out_height();
    w = shape.out_width();
    if (b.pool) {
      net.add(make_max_pool(h, w, b.channels));
      h /= 2;
      w /= 2;
    }
    add_bn(b.channels, h * w, b.kernel * b.kernel * c);
    add_activation(h * w * b.channels);
    c = b.channels;
  }
  std::size_t width = h * w * c;
  for (std::size_t n : hidden) {
    net.add(make_dense(width, n, options, ++s));
    add_bn(n, 1, width);
    add_activation(n);
    width = n;
  }
  net.add(make_dense(width, 10, options, ++s));
  add_bn(10, 1, width);
  return net;
}

struct convnet_case {
  std::size_t h, w, c;
  std::vector<conv_block> blocks;
  std::vector<std::size_t> hidden;
};

std::vector<convnet_case> convnet_cases() {
  return {
      // Ragged channel counts (1, 63, 64, 65) across the 64-bit words, pooling of odd maps (5 -> 2).
      {6, 5, 1, {{63, 3, true, true}, {65, 3, true, false}}, {}},
      {5, 5, 65, {{64, 3, false, false}, {1, 3, true, false}, {64, 1, true, true}}, {33}},
      // A map big enough for several slabs per stage at 20 examples.
      {16, 16, 3, {{65, 3, true, true}, {64, 3, true, true}}, {70}},
  };
}

}  // namespace

TEST_CASE("packed convnets reproduce network::forward bit for bit on float inputs, every ISA") {
  runtime rt(3);
  const isa saved = active_isa();
  for (isa which : isas_under_test()) {
    force_isa(which);
    std::uint32_t seed = 0;
    for (const convnet_case& cc : convnet_cases())
      for (int wbits : {1, 2})
        for (int abits : {1, 2, 3}) {
          if (wbits == 2 && abits == 1) continue;
          ++seed;
          CAPTURE(isa_label(which));
          CAPTURE(cc.c);
          CAPTURE(wbits);
          CAPTURE(abits);
          network net = random_convnet(cc.h, cc.w, cc.c, cc.blocks, cc.hidden, wbits, abits, seed);
          packed_network packed(net);
          for (std::size_t rows : {1u, 20u}) {
            CAPTURE(rows);
            matrix x(rows, net.input_size());
            x.data = random_floats(x.data.size(), seed * 31 + static_cast<std::uint32_t>(rows));
            const matrix& want = net.forward(
                x,
                step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false});
            std::vector<float> got(rows * 10);
            packed.run(x.data.data(), rows, got.data(), rt);
            CHECK(!packed.last_run_used_input_bytes());
            CHECK(same_bits(got, want.data));
          }
        }
  }
  force_isa(saved);
}

TEST_CASE("packed convnets on input bytes: 8 bit planes with zero padding, exact where the float sums are") {
  runtime rt(2);
  std::uint32_t seed = 100;
  for (const convnet_case& cc : convnet_cases()) {
    CAPTURE(cc.c);
    network net = random_convnet(cc.h, cc.w, cc.c, cc.blocks, cc.hidden, 1, 1, ++seed);
    packed_network packed(net);
    const std::size_t rows = 5;
    matrix x(rows, net.input_size());
    // Inputs 0 or 1: every first-layer float sum is a small integer, so both paths agree bit for bit.
    const auto r = random_floats(x.data.size(), seed);
    for (std::size_t i = 0; i < r.size(); ++i) x.data[i] = r[i] > 0.0f ? 1.0f : 0.0f;
    const matrix& want = net.forward(
        x, step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false});
    std::vector<float> got(rows * 10);
    packed.run(x.data.data(), rows, got.data(), rt);
    CHECK(packed.last_run_used_input_bytes());
    CHECK(same_bits(got, want.data));
    // Bytes 0..255 / 255: the first layer's integer sums are exact, the float path rounds its sums of
    // 1/255 multiples; against a double-precision first layer the packed path is the one that is right.
    for (std::size_t i = 0; i < r.size(); ++i) x.data[i] = std::round((r[i] + 1.0f) * 127.5f) / 255.0f;
    const matrix& want_bytes = net.forward(
        x, step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false});
    packed.run(x.data.data(), rows, got.data(), rt);
    CHECK(packed.last_run_used_input_bytes());
    std::size_t close = 0;
    for (std::size_t i = 0; i < got.size(); ++i) close += std::fabs(got[i] - want_bytes.data[i]) < 1e-3f;
    CHECK(close >= got.size() * 8 / 10);
  }
}

TEST_CASE("packed convnets give the same bits for 1, 2 and 5 threads and any batch split") {
  const convnet_case cc = convnet_cases()[2];
  network net = random_convnet(cc.h, cc.w, cc.c, cc.blocks, cc.hidden, 2, 2, 9);
  packed_network packed(net);
  const std::size_t rows = 23;
  const auto x = random_floats(rows * net.input_size(), 4);
  std::vector<float> first(rows * 10);
  packed.run(x.data(), rows, first.data(), runtime(1));
  for (int threads : {2, 5}) {
    std::vector<float> got(rows * 10);
    packed.run(x.data(), rows, got.data(), runtime(threads));
    CHECK(same_bits(got, first));
  }
  std::vector<float> one_by_one(rows * 10);
  for (std::size_t r = 0; r < rows; ++r)
    packed.run(x.data() + r * net.input_size(), 1, one_by_one.data() + r * 10, runtime(2));
  CHECK(same_bits(one_by_one, first));
}

TEST_CASE("packed inference refuses convnets it cannot compile, naming the layer") {
  conv_shape shape;
  shape.height = shape.width = 4;
  shape.in_channels = 2;
  shape.out_channels = 3;
  network fp;
  fp.add(make_conv2d(shape, dense_options_for(method::fp32), 1));
  CHECK_THROWS_WITH_AS(packed_network{fp}, doctest::Contains("layer 0 (conv3x3 4x4x2->3"), error);
  network ends_in_conv;
  ends_in_conv.add(make_conv2d(shape, dense_options_for(method::bnn), 1));
  ends_in_conv.add(make_spatial_batch_norm(3, 16));
  CHECK_THROWS_WITH_AS(packed_network{ends_in_conv}, doctest::Contains("a dense layer last"), error);
}

TEST_CASE("the BNN paper's convnets: CIFAR-10 128-256-512 filters, SVHN 64-128-256, both 1024-1024 dense") {
  const network_architecture cifar = paper_convnet("cifar10", method::bnn, 32, 32, 3, 10);
  CHECK(cifar.conv == std::vector<std::size_t>{128, 128, 0, 256, 256, 0, 512, 512, 0});
  CHECK(cifar.hidden == std::vector<std::size_t>{1024, 1024});
  for (method m : {method::bnn, method::qnn}) {
    const network_architecture svhn = paper_convnet("svhn", m, 32, 32, 3, 10);
    CHECK(svhn.conv == std::vector<std::size_t>{64, 64, 0, 128, 128, 0, 256, 256, 0});
    CHECK(svhn.hidden == std::vector<std::size_t>{1024, 1024});
    CHECK(paper_convnet("svhn", m, 32, 32, 3, 10, 0.5).conv ==
          std::vector<std::size_t>{32, 32, 0, 64, 64, 0, 128, 128, 0});
  }
  // Lin et al.'s methods get their own (valid-padded) network on both datasets (hantek/BinaryConnect svhn.py).
  CHECK(paper_convnet("svhn", method::bc, 32, 32, 3, 10).conv == convnet_lin_preset(32, 32, 3, 10).conv);
  CHECK(paper_convnet("cifar10", method::tc_qbp, 32, 32, 3, 10).conv_kernels ==
        convnet_lin_preset(32, 32, 3, 10).conv_kernels);
}

TEST_CASE("inputs centred to [-1, 1] (pm1): 2x - 1, kept in the model file, and the packed path agrees") {
  preprocessing pre;
  pre.pm1 = true;
  std::vector<float> x{0.0f, 1.0f, 128.0f / 255.0f, 0.25f};
  pre.apply(x.data(), 1, x.size(), runtime(1));
  CHECK(x == std::vector<float>{-1.0f, 1.0f, 2.0f * (128.0f / 255.0f) - 1.0f, -0.5f});
  network_architecture arch = paper_convnet("svhn", method::bnn, 8, 8, 3, 10, 0.125);
  arch.act = activation::sign;
  network net = make_network(arch, dense_options_for(method::bnn), 5);
  model_metadata meta;
  meta.dataset = "svhn";
  meta.width = meta.height = 8;
  meta.channels = 3;
  meta.preprocess = pre;
  const std::string path = temp_path("pm1.fwm");
  save_model(path, net, meta);
  model loaded = load_model(path);
  std::filesystem::remove(path);
  CHECK(loaded.meta.preprocess.pm1);
  REQUIRE(loaded.packed);
  runtime rt(2);
  matrix images(4, arch.inputs());
  images.data = random_floats(images.data.size(), 3, 0.0f, 1.0f);
  for (float& v : images.data) v = std::round(v * 255.0f) / 255.0f;
  loaded.meta.preprocess.apply(images.data.data(), images.rows, images.cols, rt);
  const std::vector<float> packed_scores = loaded.infer(images, rt).data;
  CHECK(!loaded.packed->last_run_used_input_bytes());  // [-1, 1]: the first layer's float path
  CHECK(same_bits(
      packed_scores,
      net.forward(images,
                  step_context{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false})
          .data));
  CHECK(same_bits(packed_scores, loaded.run(images, rt).data));
}

TEST_CASE("a loaded BNN keeps its weights as bits: re-saved byte for byte, decoded to plus or minus 1 only on demand") {
  network_architecture arch = paper_convnet("cifar10", method::bnn, 8, 8, 3, 10, 0.125);
  arch.act = activation::sign;
  network net = make_network(arch, dense_options_for(method::bnn), 11);
  model_metadata meta;
  meta.dataset = "cifar10";
  meta.width = meta.height = 8;
  meta.channels = 3;
  const std::string path = temp_path("resave.fwm"), again = temp_path("resave2.fwm");
  save_model(path, net, meta);
  model loaded = load_model(path);
  save_model(again, loaded.net, loaded.meta);  // straight from the packed planes
  CHECK(read_bytes(path) == read_bytes(again));
  std::filesystem::remove(path);
  std::filesystem::remove(again);
  // Training or inspecting the weights decodes them: sign(W) of the network that was saved.
  const auto& original = net.layers()[0]->parameters()[0]->value;
  const auto& decoded = loaded.net.layers()[0]->parameters()[0]->value;
  REQUIRE(decoded.size() == original.size());
  for (std::size_t i = 0; i < decoded.size(); ++i) CHECK(decoded[i] == (original[i] >= 0.0f ? 1.0f : -1.0f));
  CHECK(loaded.net.layers()[0]->parameters()[0]->grad.size() == original.size());
}
