#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fewmul {

/// Labelled examples, one row of `features` floats per example.
struct dataset {
  std::size_t features = 0;
  std::size_t classes = 0;
  std::vector<float> x;          ///< size() * features values
  std::vector<std::uint8_t> y;   ///< one label in [0, classes) per example
  std::size_t size() const { return y.size(); }
  const float* example(std::size_t i) const { return x.data() + i * features; }
  /// Rows [first, first + count) as a new dataset.
  dataset slice(std::size_t first, std::size_t count) const;
};

/// MNIST train and test sets with pixels scaled to [0, 1].
struct mnist_data {
  dataset train;  ///< 60000 examples
  dataset test;   ///< 10000 examples
};

/// Reads the official IDX files from `directory`: train-images-idx3-ubyte, train-labels-idx1-ubyte,
/// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally gzip-compressed (".gz").
/// Throws fewmul::error naming the file on a missing file, bad magic, wrong dimensions, truncation,
/// an image/label count mismatch or a label above 9.
mnist_data load_mnist(const std::string& directory);

/// Reads one IDX images file (magic 0x00000803) into rows of rows*cols floats in [0, 1].
dataset load_idx_images(const std::string& path, std::size_t expected_rows, std::size_t expected_cols);
/// Reads one IDX labels file (magic 0x00000801).
std::vector<std::uint8_t> load_idx_labels(const std::string& path, std::uint8_t max_label);

}  // namespace fewmul
