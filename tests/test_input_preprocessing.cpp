// Input preprocessing of the papers' data: MNIST centring, LeCun local contrast normalization (SVHN) against
// a direct computation in pylearn2's "full convolution, then crop" form, the class-balanced SVHN split, and
// their round trip through model files.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <vector>

#include "fewmul/data.hpp"
#include "fewmul/error.hpp"
#include "fewmul/kernels.hpp"
#include "fewmul/model.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

dataset random_images(std::size_t n, std::uint32_t h, std::uint32_t w, std::uint32_t c, std::uint32_t seed) {
  dataset d;
  d.height = h;
  d.width = w;
  d.channels = c;
  d.features = std::size_t{h} * w * c;
  d.classes = 10;
  d.x.resize(n * d.features);
  for (std::size_t i = 0; i < d.x.size(); ++i)
    d.x[i] = static_cast<float>(kernels::counter_hash(seed, static_cast<std::uint32_t>(i)) % 256) / 255.0f;
  for (std::size_t i = 0; i < n; ++i) d.y.push_back(static_cast<std::uint8_t>(i % 10));
  return d;
}

// pylearn2 lecun_lcn on one channel of a channel-last image, literally: a "full" 2-D convolution with the
// 7x7 Gaussian (sigma 2, sum 1), cropped by 3 on each side; centred = v - crop(full(v)); d =
// sqrt(crop(full(v^2))); divisor = max(max(mean(d), d), 1e-4).
std::vector<double> reference_lcn(const float* image, std::size_t h, std::size_t w, std::size_t channels,
                                  std::size_t c) {
  double g[7][7], total = 0;
  for (int i = 0; i < 7; ++i)
    for (int j = 0; j < 7; ++j) total += g[i][j] = std::exp(-((i - 3.0) * (i - 3.0) + (j - 3.0) * (j - 3.0)) / 8.0);
  for (auto& row : g)
    for (double& v : row) v /= total;
  const std::size_t fh = h + 6, fw = w + 6;  // full convolution output
  std::vector<double> full(fh * fw, 0.0), full_sq(fh * fw, 0.0);
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x) {
      const double v = image[(y * w + x) * channels + c];
      for (std::size_t i = 0; i < 7; ++i)
        for (std::size_t j = 0; j < 7; ++j) {
          full[(y + i) * fw + x + j] += g[i][j] * v;
          full_sq[(y + i) * fw + x + j] += g[i][j] * v * v;
        }
    }
  std::vector<double> d(h * w), out(h * w);
  double mean_d = 0;
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x) mean_d += d[y * w + x] = std::sqrt(full_sq[(y + 3) * fw + x + 3]);
  mean_d /= static_cast<double>(h * w);
  for (std::size_t y = 0; y < h; ++y)
    for (std::size_t x = 0; x < w; ++x) {
      const double divisor = std::max(std::max(mean_d, d[y * w + x]), 1e-4);
      out[y * w + x] = (image[(y * w + x) * channels + c] - full[(y + 3) * fw + x + 3]) / divisor;
    }
  return out;
}

}  // namespace

TEST_CASE("local contrast normalization matches pylearn2's full-convolution form on a small image") {
  const runtime rt(2);
  const dataset raw = random_images(3, 9, 11, 3, 7);
  for (std::uint32_t normalized : {1u, 3u}) {
    CAPTURE(normalized);
    preprocessing_options o;
    o.lcn_channels = normalized;
    const preprocessing p = fit_preprocessing(raw, o, rt);
    CHECK(p.lcn_height == 9);
    CHECK(p.lcn_width == 11);
    dataset d = raw;
    p.apply(d, rt);
    for (std::size_t n = 0; n < d.size(); ++n)
      for (std::size_t c = 0; c < 3; ++c) {
        const std::vector<double> want = reference_lcn(raw.example(n), 9, 11, 3, c);
        for (std::size_t q = 0; q < 99; ++q) {
          const float got = d.example(n)[q * 3 + c];
          if (c < normalized)
            CHECK(got == doctest::Approx(want[q]).epsilon(1e-5));
          else
            CHECK(got == raw.example(n)[q * 3 + c]);  // pylearn2's effective output: channel 0 alone
        }
      }
  }
}

TEST_CASE("local contrast normalization zeroes flat regions and ignores the image's scale") {
  const runtime rt(1);
  dataset flat = random_images(1, 12, 12, 1, 3);
  std::fill(flat.x.begin(), flat.x.end(), 0.7f);
  preprocessing_options o;
  o.lcn_channels = 1;
  const preprocessing p = fit_preprocessing(flat, o, rt);
  p.apply(flat, rt);
  for (std::size_t y = 3; y < 9; ++y)  // the 7x7 window lies inside the image
    for (std::size_t x = 3; x < 9; ++x) CHECK(std::fabs(flat.x[y * 12 + x]) < 1e-6f);
  CHECK(flat.x[0] > 0.01f);  // at the border the zero padding lowers the local mean below v
  dataset a = random_images(2, 12, 12, 1, 5), b = a;
  for (float& v : b.x) v *= 40.0f;
  p.apply(a, rt);
  p.apply(b, rt);
  for (std::size_t i = 0; i < a.x.size(); ++i) CHECK(b.x[i] == doctest::Approx(a.x[i]).epsilon(1e-5));
}

TEST_CASE("centring subtracts the training mean of each feature, and survives a model file") {
  const runtime rt(1);
  const dataset train = random_images(50, 4, 4, 1, 11);
  preprocessing_options o;
  o.center = true;
  const preprocessing p = fit_preprocessing(train, o, rt);
  REQUIRE(p.center_mean.size() == 16);
  dataset d = train;
  p.apply(d, rt);
  for (std::size_t f = 0; f < 16; ++f) {
    double want = 0, after = 0;
    for (std::size_t n = 0; n < 50; ++n) want += train.x[n * 16 + f], after += d.x[n * 16 + f];
    CHECK(p.center_mean[f] == doctest::Approx(want / 50));
    CHECK(std::fabs(after / 50) < 1e-6);
  }
  model_metadata meta;
  meta.width = meta.height = 4;
  meta.channels = 1;
  meta.preprocess = p;
  meta.preprocess.lcn_height = meta.preprocess.lcn_width = 4;
  meta.preprocess.lcn_channels = 1;
  network net = make_mlp(16, {8}, 10, dense_options_for(method::bc), activation::relu, 1);
  const std::string path = temp_path("centred.fwm");
  save_model(path, net, meta);
  const model loaded = load_model(path);
  CHECK(loaded.meta.preprocess.center_mean == p.center_mean);
  CHECK(loaded.meta.preprocess.lcn_channels == 1);
  CHECK(loaded.meta.preprocess.lcn_width == 4);
  std::filesystem::remove(path);
  dataset other_shape = random_images(1, 5, 5, 1, 1);
  CHECK_THROWS_WITH_AS(p.apply(other_shape, rt), doctest::Contains("centring was fitted on 16"), fewmul::error);
  preprocessing_options too_many;
  too_many.lcn_channels = 2;
  CHECK_THROWS_WITH_AS(fit_preprocessing(train, too_many, rt), doctest::Contains("the images have 1"), fewmul::error);
}

TEST_CASE("the SVHN split holds out 400 of each digit from train and 200 from extra, last") {
  const dataset train = random_images(4100, 2, 2, 3, 21), extra = random_images(2300, 2, 2, 3, 22);
  const dataset all = svhn_balanced_split(train, extra);
  REQUIRE(all.size() == 6400);
  const std::size_t rest = all.size() - 6000;
  std::map<int, int> counts;
  for (std::size_t i = rest; i < all.size(); ++i) ++counts[all.y[i]];
  for (int digit = 0; digit < 10; ++digit) CHECK(counts[digit] == 600);
  // Every image is used once: each training row is a row of train or extra (their pixels are distinct).
  std::map<std::vector<float>, int> seen;
  for (std::size_t i = 0; i < train.size(); ++i) ++seen[std::vector<float>(train.example(i), train.example(i) + 12)];
  for (std::size_t i = 0; i < extra.size(); ++i) ++seen[std::vector<float>(extra.example(i), extra.example(i) + 12)];
  for (std::size_t i = 0; i < all.size(); ++i) --seen[std::vector<float>(all.example(i), all.example(i) + 12)];
  for (const auto& [row, count] : seen) CHECK(count == 0);
  // A fixed draw: the same validation set every time.
  CHECK(std::equal(all.x.begin() + static_cast<std::ptrdiff_t>(rest * 12), all.x.end(),
                   svhn_balanced_split(train, extra).x.begin() + static_cast<std::ptrdiff_t>(rest * 12)));
  CHECK_THROWS_WITH_AS(svhn_balanced_split(train.slice(0, 3000), extra), doctest::Contains("digit"), fewmul::error);
}

TEST_CASE("preprocessing fitted and applied through borrowed rows gives the bits of owned rows") {
  const runtime rt(2);
  dataset owned = random_images(300, 6, 6, 3, 11);
  std::vector<float> elsewhere = owned.x;  // the rows held outside the dataset (a node's shared copy)
  dataset borrowed = owned;
  borrowed.x.clear();
  borrowed.borrowed_x = elsewhere.data();
  const dataset view = borrowed.slice(100, 150);
  CHECK(view.x.empty());
  CHECK(view.example(0) == elsewhere.data() + 100 * owned.features);  // a view, not a copy
  CHECK(view.y == std::vector<std::uint8_t>(owned.y.begin() + 100, owned.y.begin() + 250));
  preprocessing_options o;
  o.center = true;
  o.gcn = true;
  o.zca = true;
  const preprocessing from_owned = fit_preprocessing(owned.slice(0, 250), o, rt);
  const preprocessing from_borrowed = fit_preprocessing(borrowed.slice(0, 250), o, rt);
  CHECK(from_borrowed.center_mean == from_owned.center_mean);
  CHECK(from_borrowed.zca_matrix == from_owned.zca_matrix);
  from_owned.apply(owned, rt);
  from_borrowed.apply(borrowed, rt);  // in place, in the memory it borrows
  CHECK(borrowed.x.empty());
  CHECK(elsewhere == owned.x);
}
