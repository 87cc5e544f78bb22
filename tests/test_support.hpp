#pragma once
// Helpers shared by the tests: deterministic random data and the list of ISAs to check.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fewmul/data.hpp"
#include "fewmul/error.hpp"
#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"

namespace fewmul_test {

inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline std::vector<std::uint64_t> random_bits(std::size_t rows, std::size_t cols, std::uint32_t seed) {
  std::mt19937_64 gen(seed);
  const std::size_t words = fewmul::kernels::words_for(cols);
  std::vector<std::uint64_t> v(rows * words);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t w = 0; w < words; ++w) {
      std::uint64_t bits = gen();
      const std::size_t valid = cols - w * 64;
      if (valid < 64) bits &= (std::uint64_t{1} << valid) - 1;  // padding bits are 0
      v[r * words + w] = bits;
    }
  return v;
}

/// Every ISA this machine runs, the reference included.
inline std::vector<fewmul::isa> isas_under_test() { return fewmul::supported_isas(); }

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline std::string isa_label(fewmul::isa i) { return std::string(fewmul::isa_name(i)); }

/// A path in the temporary directory, unique to this test process.
inline std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("fewmul_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

// The fewmul::error message `f` throws ("" when it does not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const fewmul::error& e) {
    return e.what();
  }
  return "";
}

inline std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

inline void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

/// Three separable classes of `features` values (a channel-last image when the network is a convnet):
/// random values with the label's feature shifted up.
inline fewmul::dataset blobs(std::size_t n, std::size_t features, std::uint32_t seed) {
  fewmul::dataset d;
  d.features = features;
  d.classes = 3;
  d.x = random_floats(n * features, seed);
  for (std::size_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::uint8_t>(i % 3);
    d.x[i * features + label] += 2.0f;
    d.y.push_back(label);
  }
  return d;
}

/// side x side x 2 channel-last images of four classes: the class is the quadrant holding a bright square (the
/// quadrant less a one-pixel border) in channel class % 2, on dim noise.
inline fewmul::dataset quadrant_blob_images(std::size_t n, std::uint32_t seed, std::size_t side) {
  fewmul::dataset d;
  d.height = d.width = side;
  d.channels = 2;
  d.features = side * side * 2;
  d.classes = 4;
  d.x = random_floats(n * d.features, seed, 0.0f, 0.3f);
  const std::size_t half = side / 2;
  for (std::size_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::uint8_t>((i * 7 + seed) % 4);
    const std::size_t y0 = (label / 2) * half, x0 = (label % 2) * half;
    for (std::size_t y = y0 + 1; y < y0 + half - 1; ++y)
      for (std::size_t x = x0 + 1; x < x0 + half - 1; ++x)
        d.x[i * d.features + (y * side + x) * 2 + (label % 2)] += 1.0f;
    d.y.push_back(label);
  }
  return d;
}

}  // namespace fewmul_test
