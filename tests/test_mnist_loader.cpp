// The IDX loader on files written here: plain and gzip, and every kind of broken file.
#include <doctest/doctest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "fewmul/data.hpp"
#include "fewmul/error.hpp"

using namespace fewmul;
namespace fs = std::filesystem;

namespace {

std::vector<unsigned char> be32(std::uint32_t v) {
  return {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 8),
          static_cast<unsigned char>(v)};
}

std::vector<unsigned char> images_file(std::uint32_t count, std::uint32_t rows = 28, std::uint32_t cols = 28,
                                       std::uint32_t magic = 0x803) {
  std::vector<unsigned char> out;
  for (auto v : {magic, count, rows, cols}) {
    auto b = be32(v);
    out.insert(out.end(), b.begin(), b.end());
  }
  for (std::uint32_t i = 0; i < count * rows * cols; ++i) out.push_back(static_cast<unsigned char>(i * 7 % 256));
  return out;
}

std::vector<unsigned char> labels_file(std::uint32_t count, std::uint32_t magic = 0x801) {
  std::vector<unsigned char> out;
  for (auto v : {magic, count}) {
    auto b = be32(v);
    out.insert(out.end(), b.begin(), b.end());
  }
  for (std::uint32_t i = 0; i < count; ++i) out.push_back(static_cast<unsigned char>(i % 10));
  return out;
}

struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() / ("fewmul_idx_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::string write(const std::string& name, const std::vector<unsigned char>& bytes, bool gzip = false) const {
    const std::string file = (path / name).string();
    if (gzip) {
      gzFile f = gzopen(file.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(file, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    return file;
  }
};

void write_mnist(const temp_dir& dir, bool gzip, std::uint32_t train = 12, std::uint32_t test = 5) {
  const std::string ext = gzip ? ".gz" : "";
  dir.write("train-images-idx3-ubyte" + ext, images_file(train), gzip);
  dir.write("train-labels-idx1-ubyte" + ext, labels_file(train), gzip);
  dir.write("t10k-images-idx3-ubyte" + ext, images_file(test), gzip);
  dir.write("t10k-labels-idx1-ubyte" + ext, labels_file(test), gzip);
}

}  // namespace

TEST_CASE("MNIST loads from plain and gzip IDX files") {
  for (bool gzip : {false, true}) {
    temp_dir dir;
    write_mnist(dir, gzip);
    const mnist_data d = load_mnist(dir.path.string());
    CHECK(d.train.size() == 12);
    CHECK(d.test.size() == 5);
    CHECK(d.train.features == 784);
    CHECK(d.train.y[3] == 3);
    CHECK(d.train.x[1] == doctest::Approx(7.0 / 255.0));
    CHECK(d.test.x.size() == 5 * 784);
  }
}

TEST_CASE("broken IDX files give errors that name the file and the problem") {
  temp_dir dir;
  auto expect = [&](const std::string& file, const std::vector<unsigned char>& bytes, const char* message,
                    bool images = true, bool gzip = false) {
    const std::string path = dir.write(file, bytes, gzip);
    CAPTURE(message);
    if (images)
      CHECK_THROWS_WITH_AS(load_idx_images(path, 28, 28), doctest::Contains((path + ": " + message).c_str()),
                           fewmul::error);
    else
      CHECK_THROWS_WITH_AS(load_idx_labels(path, 9), doctest::Contains((path + ": " + message).c_str()), fewmul::error);
  };
  expect("bad-magic", images_file(2, 28, 28, 0x801), "bad magic 0x00000801, expected 0x00000803");
  expect("wrong-dims", images_file(2, 32, 32), "images are 32x32, expected 28x28");
  auto truncated = images_file(3);
  truncated.resize(truncated.size() - 100);
  expect("truncated", truncated, "truncated: pixel data needs 2352 bytes");
  expect("truncated.gz", truncated, "truncated: pixel data needs 2352 bytes", true, true);
  auto header_only = images_file(1);
  header_only.resize(10);
  expect("short-header", header_only, "truncated: the header needs 4 bytes");
  auto extra = images_file(2);
  extra.push_back(0);
  expect("lying-count", extra, "unexpected data after the last record");
  expect("huge-count", images_file(0), "implausible item count 0");
  auto bad_label = labels_file(4);
  bad_label.back() = 10;
  expect("bad-label", bad_label, "label 10 at index 3 exceeds 9", false);
  expect("labels-magic", labels_file(4, 0x803), "bad magic 0x00000803, expected 0x00000801", false);
  auto corrupt = std::vector<unsigned char>{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3};
  expect("corrupt.gz", corrupt, "", true, false);
  CHECK_THROWS_WITH_AS(load_idx_images((dir.path / "missing").string(), 28, 28), doctest::Contains("no such file"),
                       fewmul::error);
}

TEST_CASE("an image/label count mismatch and a missing directory are reported") {
  temp_dir dir;
  write_mnist(dir, false);
  dir.write("train-labels-idx1-ubyte", labels_file(11));
  CHECK_THROWS_WITH_AS(load_mnist(dir.path.string()), doctest::Contains("11 labels but"), fewmul::error);
  CHECK_THROWS_WITH_AS(load_mnist((dir.path / "nowhere").string()), doctest::Contains("fetch-data.sh"), fewmul::error);
}
