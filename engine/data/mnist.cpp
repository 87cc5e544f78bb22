// MNIST IDX loader. zlib's gz* functions read gzip-compressed and plain files alike.
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "fewmul/data.hpp"
#include "fewmul/error.hpp"

namespace fewmul {
namespace {

constexpr std::uint32_t idx_images_magic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr std::uint32_t idx_labels_magic = 0x00000801;  // unsigned byte, 1 dimension
constexpr std::uint32_t max_plausible_count = 10'000'000;

class idx_reader {
 public:
  explicit idx_reader(std::string path) : path_(std::move(path)) {
    if (!std::filesystem::is_regular_file(path_)) throw error(path_ + ": no such file");
    file_ = gzopen(path_.c_str(), "rb");
    if (file_ == nullptr) throw error(path_ + ": cannot open");
  }
  ~idx_reader() {
    if (file_) gzclose(file_);
  }
  idx_reader(const idx_reader&) = delete;
  idx_reader& operator=(const idx_reader&) = delete;

  const std::string& path() const { return path_; }

  // Reads exactly `size` bytes or throws naming what was being read.
  void read(void* out, std::size_t size, const char* what) {
    auto* bytes = static_cast<unsigned char*>(out);
    std::size_t done = 0;
    while (done < size) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(size - done, 1u << 30));
      const int got = gzread(file_, bytes + done, chunk);
      if (got < 0) {
        int code = 0;
        throw error(path_ + ": corrupt compressed data while reading " + what + " (" + gzerror(file_, &code) + ")");
      }
      if (got == 0)
        throw error(path_ + ": truncated: " + what + " needs " + std::to_string(size) + " bytes, only " +
                    std::to_string(done) + " present");
      done += static_cast<std::size_t>(got);
    }
  }
  std::uint32_t read_u32(const char* what) {
    unsigned char b[4];
    read(b, 4, what);
    return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
  }
  void expect_end() {
    unsigned char extra;
    const int got = gzread(file_, &extra, 1);
    if (got > 0) throw error(path_ + ": unexpected data after the last record (the header's count is wrong)");
    if (got < 0) {
      int code = 0;
      throw error(path_ + ": corrupt compressed data at the end (" + std::string(gzerror(file_, &code)) + ")");
    }
  }
  std::uint32_t read_magic(std::uint32_t expected, const char* kind) {
    const std::uint32_t magic = read_u32("the header");
    if (magic != expected) {
      char text[96];
      std::snprintf(text, sizeof text, ": bad magic 0x%08x, expected 0x%08x (%s)", magic, expected, kind);
      throw error(path_ + text);
    }
    return magic;
  }
  std::uint32_t read_count() {
    const std::uint32_t count = read_u32("the header");
    if (count == 0 || count > max_plausible_count)
      throw error(path_ + ": implausible item count " + std::to_string(count) + " in the header");
    return count;
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

std::string find_file(const std::string& directory, const std::string& name) {
  const std::filesystem::path plain = std::filesystem::path(directory) / name;
  if (std::filesystem::exists(plain)) return plain.string();
  const std::filesystem::path gz = std::filesystem::path(directory) / (name + ".gz");
  if (std::filesystem::exists(gz)) return gz.string();
  throw error(plain.string() + ": no such file (nor " + gz.filename().string() +
              "); fetch MNIST with apps/scripts/fetch-data.sh mnist");
}

}  // namespace

dataset load_idx_images(const std::string& path, std::size_t expected_rows, std::size_t expected_cols) {
  idx_reader in(path);
  in.read_magic(idx_images_magic, "IDX images");
  const std::uint32_t count = in.read_count();
  const std::uint32_t rows = in.read_u32("the header"), cols = in.read_u32("the header");
  if (rows != expected_rows || cols != expected_cols)
    throw error(path + ": images are " + std::to_string(rows) + "x" + std::to_string(cols) + ", expected " +
                std::to_string(expected_rows) + "x" + std::to_string(expected_cols));
  dataset out;
  out.features = std::size_t{rows} * cols;
  out.height = rows;
  out.width = cols;
  out.channels = 1;
  // Read in chunks: memory follows the bytes actually present, not the header's claim.
  const std::size_t total = std::size_t{count} * out.features;
  std::vector<unsigned char> pixels;
  for (std::size_t done = 0; done < total;) {
    const std::size_t chunk = std::min<std::size_t>(total - done, std::size_t{1} << 24);
    pixels.resize(done + chunk);
    in.read(pixels.data() + done, chunk, "pixel data");
    done += chunk;
  }
  in.expect_end();
  out.x.resize(pixels.size());
  for (std::size_t i = 0; i < pixels.size(); ++i) out.x[i] = static_cast<float>(pixels[i]) / 255.0f;
  out.y.assign(count, 0);
  return out;
}

std::vector<std::uint8_t> load_idx_labels(const std::string& path, std::uint8_t max_label) {
  idx_reader in(path);
  in.read_magic(idx_labels_magic, "IDX labels");
  const std::uint32_t count = in.read_count();
  std::vector<std::uint8_t> labels;
  for (std::size_t done = 0; done < count;) {
    const std::size_t chunk = std::min<std::size_t>(count - done, std::size_t{1} << 24);
    labels.resize(done + chunk);
    in.read(labels.data() + done, chunk, "labels");
    done += chunk;
  }
  in.expect_end();
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] > max_label)
      throw error(path + ": label " + std::to_string(labels[i]) + " at index " + std::to_string(i) + " exceeds " +
                  std::to_string(max_label));
  return labels;
}

mnist_data load_mnist(const std::string& directory) {
  auto load_split = [&](const std::string& prefix) {
    const std::string images_path = find_file(directory, prefix + "-images-idx3-ubyte");
    const std::string labels_path = find_file(directory, prefix + "-labels-idx1-ubyte");
    dataset d = load_idx_images(images_path, 28, 28);
    d.y = load_idx_labels(labels_path, 9);
    if (d.y.size() * d.features != d.x.size())
      throw error(labels_path + ": " + std::to_string(d.y.size()) + " labels but " + images_path + " has " +
                  std::to_string(d.x.size() / d.features) + " images");
    d.classes = 10;
    return d;
  };
  return mnist_data{load_split("train"), load_split("t10k")};
}

}  // namespace fewmul
