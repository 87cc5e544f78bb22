// Network architectures: Lin et al.'s valid-padded CIFAR-10/SVHN convnet (shapes, parameter counts by hand,
// layer order, the pooled Glorot fan) and its checkpoints.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "fewmul/error.hpp"
#include "fewmul/model.hpp"
#include "fewmul/network.hpp"
#include "fewmul/train.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

struct value_counts {
  std::size_t weights = 0, batch_norm = 0;
};

value_counts count_values(network& net) {
  value_counts c;
  for (const auto& l : net.layers())
    for (parameter* p : l->parameters()) (p->name == "W" ? c.weights : c.batch_norm) += p->value.size();
  return c;
}

}  // namespace

TEST_CASE("Lin et al.'s convnet at width 1 has the hand-counted shapes and parameters") {
  const network_architecture a = convnet_lin_preset(32, 32, 3, 10);
  network net = make_network(a, dense_options_for(method::bc), 1);
  // Weights by hand: 3*3*3*128 + 3*3*128*128 + 2*2*128*256 + 2*2*256*256 + 2*2*256*512 + 2*2*512*512
  // + 2*2*512*1024 + 1024*1024 + 1024*10 = 3456 + 147456 + 131072 + 262144 + 524288 + 1048576 + 2097152
  // + 1048576 + 10240.
  const value_counts counts = count_values(net);
  CHECK(counts.weights == 5272960);
  // Batch-norm scale and shift of 128+128+256+256+512+512+1024 channels and 1024+10 units.
  CHECK(counts.batch_norm == 2 * 3850);
  // 32 -C3-> 30 -C3-> 28 -MP-> 14 -C2-> 13 -C2-> 12 -MP-> 6 -C2-> 5 -C2-> 4 -MP-> 2 -C2-> 1.
  std::vector<std::string> convolutions, order;
  for (const auto& l : net.layers()) {
    const std::string d = l->describe();
    order.push_back(d.substr(0, d.find(' ')));
    if (d.rfind("conv", 0) == 0) convolutions.push_back(d.substr(0, d.find(" binary")));
  }
  CHECK(convolutions == std::vector<std::string>{"conv3x3 32x32x3->128 valid", "conv3x3 30x30x128->128 valid",
                                                 "conv2x2 14x14x128->256 valid", "conv2x2 13x13x256->256 valid",
                                                 "conv2x2 6x6x256->512 valid", "conv2x2 5x5x512->512 valid",
                                                 "conv2x2 2x2x512->1024 valid"});
  // conv -> pool -> batch norm -> ReLU (hantek/BinaryConnect layer.py conv_layer.fprop).
  REQUIRE(order.size() >= 7);
  CHECK(order[3].rfind("conv", 0) == 0);
  CHECK(order[4].find("pool") != std::string::npos);
  CHECK(order[5].find("norm") != std::string::npos);
  CHECK(order[6] == "relu");
  CHECK(net.layers()[net.layers().size() - 2]->output_size() == 10);
  CHECK(net.input_size() == 32 * 32 * 3);
}

TEST_CASE("Lin et al.'s convnet divides a pooled convolution's fan-out by the pool area") {
  const network_architecture a = convnet_lin_preset(32, 32, 3, 10);
  network net = make_network(a, dense_options_for(method::bc_qbp), 1);
  std::vector<float> scales;
  for (parameter* p : net.parameters())
    if (p->name == "W") scales.push_back(p->lr_scale);
  REQUIRE(scales.size() == 9);
  // hantek/BinaryConnect layer.py: fan = n_inputs + n_units, n_units = filters * k^2 / pool area; the
  // binary_connect step scale is fan / 1.5.
  CHECK(scales[0] == doctest::Approx((27.0 + 128.0 * 9) / 1.5));           // unpooled 3x3
  CHECK(scales[1] == doctest::Approx((128.0 * 9 + 128.0 * 9 / 4) / 1.5));  // pooled 3x3
  CHECK(scales[3] == doctest::Approx((256.0 * 4 + 256.0 * 4 / 4) / 1.5));  // pooled 2x2
  CHECK(scales[6] == doctest::Approx((512.0 * 4 + 1024.0 * 4) / 1.5));     // unpooled 2x2
  CHECK(scales[7] == doctest::Approx((1024.0 + 1024.0) / 1.5));            // dense
  // The BNN paper's net keeps k^2 (in + out): the option is Lin et al.'s alone.
  network bnn = make_network(convnet_preset(32, 32, 3, 10, 0.25), dense_options_for(method::bc), 1);
  CHECK(bnn.parameters().at(0)->lr_scale == doctest::Approx(9.0 * (3 + 32) / 1.5));
  CHECK(bnn.parameters().at(3)->lr_scale == doctest::Approx(9.0 * (32 + 32) / 1.5));
}

TEST_CASE("the convnet of each method follows its paper, at any width") {
  for (method m : {method::fp32, method::bc, method::bc_stoch, method::tc, method::bc_qbp, method::tc_qbp}) {
    const network_architecture a = convnet_preset_for(m, 32, 32, 3, 10, 0.25);
    CHECK(a.conv == std::vector<std::size_t>{32, 32, 0, 64, 64, 0, 128, 128, 0, 256});
    CHECK(a.conv_kernels == std::vector<std::size_t>{3, 3, 2, 2, 2, 2, 2});
    CHECK_FALSE(a.conv_same_padding);
    CHECK(a.hidden == std::vector<std::size_t>{256});
  }
  for (method m : {method::bnn, method::qnn}) {
    const network_architecture a = convnet_preset_for(m, 32, 32, 3, 10, 0.25);
    CHECK(a.conv == std::vector<std::size_t>{32, 32, 0, 64, 64, 0, 128, 128, 0});
    CHECK(a.conv_kernels.empty());
    CHECK(a.conv_same_padding);
    CHECK_FALSE(a.fan_out_per_pool);
  }
}

TEST_CASE("impossible kernel lists and valid-padded shapes are refused with clear errors") {
  network_architecture a = convnet_lin_preset(32, 32, 3, 10, 0.0625);
  a.conv_kernels.pop_back();
  CHECK_THROWS_WITH_AS(make_network(a, dense_options_for(method::fp32), 1),
                       doctest::Contains("6 kernel sizes for 7 convolutions"), fewmul::error);
  a = convnet_lin_preset(20, 20, 3, 10, 0.0625);  // 20 -> 18 -> 16 -> 8 -> 7 -> 6 -> 3 -> 2 -> 1: a pool of 1x1
  CHECK_THROWS_WITH_AS(make_network(a, dense_options_for(method::fp32), 1), doctest::Contains("max-pooling needs maps"),
                       fewmul::error);
  a = convnet_lin_preset(32, 32, 3, 10, 0.0625);
  a.conv_same_padding = true;  // 2x2 kernels have no centre
  CHECK_THROWS_WITH_AS(make_network(a, dense_options_for(method::fp32), 1), doctest::Contains("kernel 2"),
                       fewmul::error);
  conv_shape even;
  even.height = even.width = 4;
  even.in_channels = 1;
  even.out_channels = 2;
  even.kernel = 2;
  even.same_padding = false;
  CHECK(make_conv2d(even, dense_options_for(method::fp32), 1)->output_size() == 3 * 3 * 2);
  even.kernel = 5;
  CHECK_THROWS_WITH_AS(make_conv2d(even, dense_options_for(method::fp32), 1),
                       doctest::Contains("kernel larger than a valid-padded input"), fewmul::error);
}

TEST_CASE("a checkpoint of Lin et al.'s convnet round-trips its architecture and reproduces its outputs") {
  checkpoint c;
  c.architecture = convnet_lin_preset(32, 32, 3, 10, 0.0625);
  c.config.training_method = method::tc_qbp;
  c.meta.width = c.meta.height = 32;
  c.meta.channels = 3;
  network net = make_network(c);
  c.state.network_state = net.snapshot();
  const std::string path = temp_path("lin.ckpt");
  save_checkpoint(path, c);
  const checkpoint loaded = load_checkpoint(path);
  CHECK(loaded.architecture.conv == c.architecture.conv);
  CHECK(loaded.architecture.conv_kernels == c.architecture.conv_kernels);
  CHECK_FALSE(loaded.architecture.conv_same_padding);
  CHECK(loaded.architecture.fan_out_per_pool);
  CHECK(loaded.architecture.hidden == c.architecture.hidden);
  network rebuilt = network_from_checkpoint(loaded, false);
  CHECK(rebuilt.describe() == net.describe());
  const std::vector<parameter*> want = net.parameters(), got = rebuilt.parameters();
  REQUIRE(want.size() == got.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CHECK(got[i]->value == want[i]->value);
    CHECK(got[i]->lr_scale == want[i]->lr_scale);
  }
  // A lying architecture (one kernel too many) is refused before any network is built.
  checkpoint lying = c;
  lying.architecture.conv_kernels.push_back(2);
  save_checkpoint(path, lying);
  CHECK_THROWS_WITH_AS(load_checkpoint(path), doctest::Contains("kernel sizes for 7 convolutions"), fewmul::error);
  std::filesystem::remove(path);
}

TEST_CASE("an exported model of Lin et al.'s convnet reproduces packed inference with its 2x2 kernels") {
  const network_architecture a = convnet_lin_preset(32, 32, 3, 10, 0.0625);
  network net = make_network(a, dense_options_for(method::bc), 3);
  const dataset data = blobs(20, a.inputs(), 4);
  const runtime rt(1);
  reestimate_batch_norm(net, data, rt, false);
  model_metadata meta;
  meta.dataset = "cifar10";
  meta.method = "bc";
  meta.width = meta.height = 32;
  meta.channels = 3;
  const std::string path = temp_path("lin.fwm");
  save_model(path, net, meta);
  model loaded = load_model(path);
  matrix x(data.size(), data.features);
  x.data = data.x;
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false};
  const matrix want = net.forward(x, ctx);
  CHECK(same_bits(loaded.run(x, rt).data, want.data));
  CHECK(loaded.net.describe() == net.describe());
  std::filesystem::remove(path);
}

namespace {

// 12x12x2 images whose class is the quadrant of a bright blob; a valid-padded 3x3 then 2x2 convnet with the
// pooled fan and, optionally, the authors' quantized-backprop rounding.
std::vector<std::vector<float>> train_valid_convnet(int threads, bool qbp_authors) {
  auto images = [](std::size_t n, std::uint32_t seed) { return quadrant_blob_images(n, seed, 12); };
  network_architecture a;
  a.height = a.width = 12;
  a.channels = 2;
  a.conv = {24, 0, 16};  // 12 -C3-> 10 -MP-> 5 -C2-> 4
  a.conv_kernels = {3, 2};
  a.conv_same_padding = false;
  a.fan_out_per_pool = true;
  a.hidden = {16};
  a.outputs = 4;
  dense_options o = dense_options_for(method::bc_qbp);
  if (qbp_authors) o.qbp_round = qbp_rounding::authors_dense;
  network net = make_network(a, o, 5);
  train_config config;
  config.training_method = method::bc_qbp;
  config.qbp_authors = qbp_authors;
  config.epochs = 1;
  config.batch = 50;
  config.threads = threads;
  config.validation = 100;
  const train_result r = train(net, images(500, 1), images(100, 2), config);
  CHECK(r.test_error_at_best < 0.6);  // chance is 0.75: the valid-padded net learns the quadrant
  return net.snapshot();
}

}  // namespace

TEST_CASE("valid-padded 2x2 convnet training is bit-identical for 1, 2 and 7 threads, both qbp roundings") {
  for (bool authors : {false, true}) {
    CAPTURE(authors);
    const auto one = train_valid_convnet(1, authors);
    CHECK(one == train_valid_convnet(2, authors));
    CHECK(one == train_valid_convnet(7, authors));
  }
}
