// CIFAR-10 binary batches and SVHN MAT-files (MATLAB 5 format, plain or zlib-compressed elements).
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "fewmul/data.hpp"
#include "fewmul/error.hpp"
#include "model/serialize.hpp"

namespace fewmul {
namespace {

constexpr std::size_t cifar_pixels = 32 * 32;
constexpr std::size_t cifar_record = 1 + 3 * cifar_pixels;

dataset image_set(std::size_t count, std::uint32_t height, std::uint32_t width, std::uint32_t channels) {
  dataset d;
  d.height = height;
  d.width = width;
  d.channels = channels;
  d.features = std::size_t{height} * width * channels;
  d.classes = 10;
  d.x.resize(count * d.features);
  d.y.resize(count);
  return d;
}

// ---- MAT-file version 5 (little-endian) -------------------------------------------------------
// A file is a 128-byte header and data elements. Each element has an 8-byte tag (u32 type, u32 size)
// and its data padded to 8 bytes, or a 4-byte "small" tag (size in the upper 16 bits of the type word)
// with up to 4 data bytes. miCOMPRESSED elements hold one zlib-compressed element; miMATRIX elements
// hold array flags, dimensions, a name and the real part.
enum mat_type : std::uint32_t {
  mi_int8 = 1,
  mi_uint8 = 2,
  mi_int16 = 3,
  mi_uint16 = 4,
  mi_int32 = 5,
  mi_uint32 = 6,
  mi_single = 7,
  mi_double = 9,
  mi_int64 = 12,
  mi_uint64 = 13,
  mi_matrix = 14,
  mi_compressed = 15,
};
constexpr std::uint32_t mx_double_class = 6, mx_uint8_class = 9;

struct mat_element {
  std::uint32_t type = 0;
  const unsigned char* data = nullptr;
  std::size_t size = 0;
};

class mat_cursor {
 public:
  mat_cursor(const unsigned char* data, std::size_t size, const std::string& path, std::string where)
      : data_(data), size_(size), path_(path), where_(std::move(where)) {}
  bool done() const { return offset_ >= size_; }
  [[noreturn]] void fail(const std::string& what) const { throw error(path_ + ": " + where_ + ": " + what); }

  mat_element next(const char* what) {
    if (size_ - offset_ < 8) fail(std::string("truncated tag of ") + what);
    std::uint32_t type, size;
    std::memcpy(&type, data_ + offset_, 4);
    std::memcpy(&size, data_ + offset_ + 4, 4);
    if (type >> 16) {  // small data element: data in the tag's second word
      mat_element e{type & 0xffffu, data_ + offset_ + 4, type >> 16};
      if (e.size > 4) fail(std::string("malformed small element for ") + what);
      offset_ += 8;
      return e;
    }
    if (size > size_ - offset_ - 8)
      fail(std::string(what) + " announces " + std::to_string(size) + " bytes, only " +
           std::to_string(size_ - offset_ - 8) + " remain (truncated)");
    mat_element e{type, data_ + offset_ + 8, size};
    offset_ += 8 + std::size_t{size};
    if (type != mi_compressed) offset_ = std::min(size_, (offset_ + 7) / 8 * 8);
    return e;
  }

 private:
  const unsigned char* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
  const std::string& path_;
  std::string where_;
};

std::size_t mat_type_bytes(std::uint32_t type) {
  switch (type) {
    case mi_int8:
    case mi_uint8:
      return 1;
    case mi_int16:
    case mi_uint16:
      return 2;
    case mi_int32:
    case mi_uint32:
    case mi_single:
      return 4;
    case mi_double:
    case mi_int64:
    case mi_uint64:
      return 8;
    default:
      return 0;
  }
}

double mat_value(const mat_element& e, std::size_t i) {
  const unsigned char* p = e.data + i * mat_type_bytes(e.type);
  auto load = [&](auto v) {
    std::memcpy(&v, p, sizeof v);
    return static_cast<double>(v);
  };
  switch (e.type) {
    case mi_int8:
      return load(std::int8_t{});
    case mi_uint8:
      return load(std::uint8_t{});
    case mi_int16:
      return load(std::int16_t{});
    case mi_uint16:
      return load(std::uint16_t{});
    case mi_int32:
      return load(std::int32_t{});
    case mi_uint32:
      return load(std::uint32_t{});
    case mi_single:
      return load(float{});
    case mi_double:
      return load(double{});
    case mi_int64:
      return load(std::int64_t{});
    default:
      return load(std::uint64_t{});
  }
}

struct mat_array {
  std::string name;
  std::uint32_t array_class = 0;
  std::vector<std::uint64_t> dims;
  mat_element real;
  std::vector<unsigned char> storage;  // decompressed bytes the elements point into
};

mat_array parse_matrix(const mat_element& m, const std::string& path) {
  mat_cursor c(m.data, m.size, path, "matrix element");
  mat_array a;
  const mat_element flags = c.next("array flags");
  if (flags.type != mi_uint32 || flags.size != 8) c.fail("bad array flags");
  std::uint32_t flag_word;
  std::memcpy(&flag_word, flags.data, 4);
  a.array_class = flag_word & 0xffu;
  if (flag_word & 0x0800u) c.fail("complex arrays are not SVHN data");
  const mat_element dims = c.next("dimensions");
  if (dims.type != mi_int32 || dims.size % 4 != 0 || dims.size < 8) c.fail("bad dimensions");
  for (std::size_t i = 0; i < dims.size / 4; ++i) {
    std::int32_t d;
    std::memcpy(&d, dims.data + 4 * i, 4);
    if (d < 0) c.fail("negative dimension");
    a.dims.push_back(static_cast<std::uint64_t>(d));
  }
  const mat_element name = c.next("array name");
  if (name.type != mi_int8) c.fail("bad array name");
  a.name.assign(reinterpret_cast<const char*>(name.data), name.size);
  a.real = c.next("real part");
  if (mat_type_bytes(a.real.type) == 0)
    c.fail("unsupported data type " + std::to_string(a.real.type) + " of " + a.name);
  std::uint64_t count = 1;
  for (auto d : a.dims) {
    if (d != 0 && count > (std::uint64_t{1} << 40) / d) c.fail("dimensions overflow");
    count *= d;
  }
  if (a.real.size != count * mat_type_bytes(a.real.type))
    c.fail(a.name + " holds " + std::to_string(a.real.size) + " bytes, its dimensions need " +
           std::to_string(count * mat_type_bytes(a.real.type)));
  return a;
}

std::vector<unsigned char> inflate_element(const mat_element& e, const std::string& path) {
  // The inner tag gives the size: inflate the tag first, then exactly that many bytes.
  z_stream z{};
  if (inflateInit(&z) != Z_OK) throw error(path + ": zlib initialization failed");
  std::vector<unsigned char> out(8);
  z.next_in = const_cast<unsigned char*>(e.data);
  z.avail_in = static_cast<uInt>(std::min<std::size_t>(e.size, 0xffffffffu));
  auto run = [&](std::size_t from, std::size_t to) {
    z.next_out = out.data() + from;
    z.avail_out = static_cast<uInt>(to - from);
    while (z.avail_out > 0) {
      const int r = inflate(&z, Z_NO_FLUSH);
      if (r == Z_STREAM_END && z.avail_out > 0) break;
      if (r != Z_OK && r != Z_STREAM_END) {
        inflateEnd(&z);
        throw error(path + ": corrupt compressed element (zlib: " + (z.msg ? z.msg : "error") + ")");
      }
      if (r == Z_OK && z.avail_in == 0 && z.avail_out > 0) break;
    }
    return to - from - z.avail_out;
  };
  const std::size_t got_tag = run(0, 8);
  std::uint32_t inner_size = 0;
  if (got_tag == 8) std::memcpy(&inner_size, out.data() + 4, 4);
  // Deflate expands at most ~1032:1, so a larger announced size is a lie (and must not be allocated).
  if (got_tag != 8 || std::uint64_t{inner_size} > std::uint64_t{e.size} * 1040 + 64) {
    inflateEnd(&z);
    throw error(path + ": compressed element is truncated or has a bad inner tag");
  }
  out.resize(8 + std::size_t{inner_size});
  const std::size_t got = run(8, out.size());
  inflateEnd(&z);
  if (got != inner_size)
    throw error(path + ": compressed element truncated: inner element announces " + std::to_string(inner_size) +
                " bytes, " + std::to_string(got) + " decompress");
  return out;
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names{"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

dataset load_cifar10_batch(const std::string& path) {
  const auto bytes = detail::read_file(path, std::uint64_t{1} << 32);
  if (bytes.empty() || bytes.size() % cifar_record != 0)
    throw error(path + ": " + std::to_string(bytes.size()) + " bytes is not a whole number of " +
                std::to_string(cifar_record) + "-byte CIFAR-10 records (truncated or not a CIFAR-10 batch)");
  const std::size_t count = bytes.size() / cifar_record;
  dataset d = image_set(count, 32, 32, 3);
  for (std::size_t i = 0; i < count; ++i) {
    const unsigned char* r = bytes.data() + i * cifar_record;
    if (r[0] > 9)
      throw error(path + ": label " + std::to_string(r[0]) + " of record " + std::to_string(i) + " exceeds 9");
    d.y[i] = r[0];
    float* out = d.x.data() + i * d.features;
    for (std::size_t p = 0; p < cifar_pixels; ++p)  // planar RGB -> channel-last
      for (std::size_t c = 0; c < 3; ++c) out[p * 3 + c] = static_cast<float>(r[1 + c * cifar_pixels + p]) / 255.0f;
  }
  return d;
}

cifar10_data load_cifar10(const std::string& directory) {
  auto file = [&](const std::string& name) {
    const std::filesystem::path p = std::filesystem::path(directory) / name;
    if (!std::filesystem::exists(p))
      throw error(p.string() + ": no such file; fetch CIFAR-10 with apps/scripts/fetch-data.sh cifar10");
    return p.string();
  };
  cifar10_data out;
  for (int b = 1; b <= 5; ++b) {
    const std::string path = file("data_batch_" + std::to_string(b) + ".bin");
    dataset part = load_cifar10_batch(path);
    if (part.size() != 10000) throw error(path + ": " + std::to_string(part.size()) + " images, expected 10000");
    if (b == 1) {
      out.train = std::move(part);
      continue;
    }
    out.train.x.insert(out.train.x.end(), part.x.begin(), part.x.end());
    out.train.y.insert(out.train.y.end(), part.y.begin(), part.y.end());
  }
  const std::string test_path = file("test_batch.bin");
  out.test = load_cifar10_batch(test_path);
  if (out.test.size() != 10000)
    throw error(test_path + ": " + std::to_string(out.test.size()) + " images, expected 10000");
  return out;
}

dataset load_svhn_mat(const std::string& path) {
  const auto bytes = detail::read_file(path, std::uint64_t{1} << 34);
  if (bytes.size() < 128) throw error(path + ": truncated: shorter than a MAT-file header");
  if (std::memcmp(bytes.data(), "MATLAB 5.0 MAT-file", 19) != 0)
    throw error(path + ": not a MATLAB 5 MAT-file (MATLAB 7.3/HDF5 files are not supported; re-save with -v7)");
  if (bytes[126] == 'M' && bytes[127] == 'I') throw error(path + ": big-endian MAT-files are not supported");
  if (bytes[126] != 'I' || bytes[127] != 'M') throw error(path + ": bad endian indicator in the MAT-file header");
  mat_cursor top(bytes.data() + 128, bytes.size() - 128, path, "top level");
  std::vector<mat_array> arrays;
  while (!top.done()) {
    mat_element e = top.next("data element");
    std::vector<unsigned char> storage;
    if (e.type == mi_compressed) {
      storage = inflate_element(e, path);
      mat_cursor inner(storage.data(), storage.size(), path, "compressed element");
      e = inner.next("compressed element");
    }
    if (e.type != mi_matrix) continue;  // other top-level elements carry nothing SVHN needs
    mat_array a = parse_matrix(e, path);
    a.storage = std::move(storage);  // moving a vector keeps its buffer: a.real stays valid
    arrays.push_back(std::move(a));
  }
  const mat_array* x = nullptr;
  const mat_array* y = nullptr;
  for (const auto& a : arrays) {
    if (a.name == "X") x = &a;
    if (a.name == "y") y = &a;
  }
  if (x == nullptr || y == nullptr) throw error(path + ": needs variables X and y (an SVHN *_32x32.mat file)");
  if (x->array_class != mx_uint8_class || x->dims.size() != 4 || x->dims[0] != 32 || x->dims[1] != 32 ||
      x->dims[2] != 3)
    throw error(path + ": X must be uint8 [32,32,3,N]");
  const std::size_t count = x->dims[3];
  if (count == 0) throw error(path + ": X holds no images");
  if (y->dims.size() != 2 || y->dims[0] * y->dims[1] != count || std::min(y->dims[0], y->dims[1]) != 1)
    throw error(path + ": y must be [N,1] with N = " + std::to_string(count) + " (the number of images in X)");
  if (y->array_class != mx_double_class && y->array_class != mx_uint8_class)
    throw error(path + ": y must be double (class " + std::to_string(y->array_class) + " found)");
  dataset d = image_set(count, 32, 32, 3);
  for (std::size_t i = 0; i < count; ++i) {
    const double label = mat_value(y->real, i);
    if (!(label >= 1.0 && label <= 10.0) || label != static_cast<double>(static_cast<int>(label)))
      throw error(path + ": label " + std::to_string(label) + " of image " + std::to_string(i) + " is not in 1..10");
    d.y[i] = static_cast<std::uint8_t>(static_cast<int>(label) % 10);  // 10 means digit 0
  }
  auto pixel = [&](std::size_t i) {
    const double v = x->real.type == mi_uint8 ? x->real.data[i] : mat_value(x->real, i);
    if (!(v >= 0.0 && v <= 255.0)) throw error(path + ": pixel value " + std::to_string(v) + " outside 0..255 in X");
    return v;
  };
  // X(row, col, channel, n) sits at row + 32*col + 1024*channel + 3072*n (column-major).
  for (std::size_t n = 0; n < count; ++n) {
    float* out = d.x.data() + n * d.features;
    for (std::size_t ch = 0; ch < 3; ++ch)
      for (std::size_t col = 0; col < 32; ++col)
        for (std::size_t row = 0; row < 32; ++row)
          out[(row * 32 + col) * 3 + ch] = static_cast<float>(pixel(row + 32 * col + 1024 * ch + 3072 * n)) / 255.0f;
  }
  return d;
}

}  // namespace fewmul
