#pragma once
#include <cstddef>
#include <vector>

namespace fewmul {

/// A dense row-major float matrix: one row per example of a minibatch, one column per feature.
struct matrix {
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<float> data;

  matrix() = default;
  matrix(std::size_t r, std::size_t c) : rows(r), cols(c), data(r * c, 0.0f) {}
  /// Reshapes, keeping capacity (contents become unspecified).
  void resize(std::size_t r, std::size_t c) {
    rows = r;
    cols = c;
    data.resize(r * c);
  }
  float* row(std::size_t r) { return data.data() + r * cols; }
  const float* row(std::size_t r) const { return data.data() + r * cols; }
  float& at(std::size_t r, std::size_t c) { return data[r * cols + c]; }
  float at(std::size_t r, std::size_t c) const { return data[r * cols + c]; }
};

}  // namespace fewmul
