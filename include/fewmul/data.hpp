#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fewmul/runtime.hpp"

namespace fewmul {

/// Labelled examples, one row of `features` floats per example. Images are stored channel-last:
/// feature (y * width + x) * channels + c.
///
/// The rows are either owned (`x`) or borrowed (`borrowed_x`, `x` empty): memory the dataset does not own and
/// that outlives it, such as the one copy that the processes of a node share in data-parallel training
/// (engine/dist). Read them through rows() or example(), which work for both.
struct dataset {
  std::size_t features = 0;
  std::size_t classes = 0;
  std::uint32_t height = 0, width = 0, channels = 0;  ///< image shape (0 when not images)
  std::vector<float> x;                               ///< size() * features values (empty when borrowed)
  std::vector<std::uint8_t> y;                        ///< one label in [0, classes) per example
  float* borrowed_x = nullptr;                        ///< size() * features values held elsewhere, or null
  std::size_t size() const { return y.size(); }
  const float* rows() const { return borrowed_x != nullptr ? borrowed_x : x.data(); }
  float* rows() { return borrowed_x != nullptr ? borrowed_x : x.data(); }
  const float* example(std::size_t i) const { return rows() + i * features; }
  /// Rows [first, first + count) as a new dataset: a copy of owned rows, a view into borrowed ones.
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

/// CIFAR-10 train (data_batch_1..5, 50000 examples) and test (test_batch, 10000) sets, 32x32x3 in [0, 1].
struct cifar10_data {
  dataset train;
  dataset test;
};
/// Reads the official CIFAR-10 binary batches (data_batch_1.bin .. data_batch_5.bin, test_batch.bin)
/// from `directory`: per image 1 label byte, then 1024 red, 1024 green and 1024 blue bytes (row-major
/// 32x32). Throws fewmul::error naming the file on a missing, truncated or padded file or a label above 9.
cifar10_data load_cifar10(const std::string& directory);
/// Reads one CIFAR-10 binary batch file (any whole number of 3073-byte records).
dataset load_cifar10_batch(const std::string& path);
/// The class names of CIFAR-10, in label order.
const std::vector<std::string>& cifar10_class_names();

/// Reads an SVHN cropped-digits MAT-file (train_32x32.mat, test_32x32.mat, extra_32x32.mat): MATLAB 5
/// format, variables X (uint8 [32,32,3,N], column-major) and y (double [N,1], label 10 meaning digit 0),
/// each stored plainly or zlib-compressed. Pixels scaled to [0, 1]. Throws fewmul::error naming the
/// file on anything else (bad header, truncation, wrong types or dimensions, labels outside 1..10).
dataset load_svhn_mat(const std::string& path);

/// Input preprocessing fitted on training data and stored with models, applied in this order: optional
/// centring (the training mean of each feature subtracted), global contrast normalization of each
/// example, LeCun local contrast normalization, ZCA whitening.
struct preprocessing {
  /// Per-feature training mean subtracted from every example (empty: none). Lin et al.'s MNIST:
  /// hantek/BinaryConnect mnist.py loads pylearn2's MNIST with center = True (X -= X.mean(axis=0)).
  std::vector<float> center_mean;
  /// x <- 2x - 1 first, so that pixels scaled to [0, 1] lie in [-1, 1]: the BNN paper's CIFAR-10 and SVHN
  /// inputs (MatthieuCourbariaux/BinaryNet Train-time/cifar10.py, svhn.py: 2/255 X - 1, no GCN, no ZCA).
  bool pm1 = false;
  bool gcn = false;
  float gcn_scale = 55.0f;  ///< GCN centres each example and scales it to this L2 norm (pylearn2's)
  /// LeCun local contrast normalization of images lcn_height x lcn_width (channel-last, as datasets hold
  /// them) after GCN, on the first lcn_channels channels (0: none): with g the 7x7 Gaussian of sigma 2
  /// normalized to sum 1 and zero padding, v <- (v - g*v) / max(d, mean(d), 1e-4), d = sqrt(g*v^2), the
  /// mean over the image's positions (pylearn2 datasets/preprocessing.py lecun_lcn and LeCunLCN, as
  /// hantek/BinaryConnect svhn_preprocessing.py applies them to SVHN).
  std::uint32_t lcn_height = 0, lcn_width = 0, lcn_channels = 0;
  std::vector<float> zca_mean;    ///< per-feature mean (empty: no whitening)
  std::vector<float> zca_matrix;  ///< features x features, symmetric: x <- (x - mean) * zca_matrix
  bool active() const { return pm1 || !center_mean.empty() || gcn || lcn_channels > 0 || !zca_mean.empty(); }
  /// Transforms `n` rows of `features` values in place.
  void apply(float* rows, std::size_t n, std::size_t features, const runtime& rt) const;
  void apply(dataset& data, const runtime& rt) const { apply(data.rows(), data.size(), data.features, rt); }
};

/// What fit_preprocessing fits, in the order preprocessing applies it.
struct preprocessing_options {
  bool center = false;
  bool gcn = false;
  float gcn_scale = 55.0f;
  /// LCN of the first lcn_channels channels (0: none); needs the training set's image shape. pylearn2's
  /// LeCunLCN (the SVHN data of Lin et al.) returns from its channel loop after the first channel, so its
  /// output normalizes channel 0 alone: 1 reproduces it, the image's channel count normalizes all.
  std::uint32_t lcn_channels = 0;
  bool zca = false;
  float zca_bias = 0.1f;  ///< pylearn2's ZCA filter_bias default
};

/// Fits preprocessing on `train`: the training mean (center), GCN, LCN, then ZCA whitening
/// W = (C + zca_bias I)^(-1/2) of the preprocessed training covariance C, as pylearn2's ZCA with
/// filter_bias. Throws fewmul::error on LCN without an image shape or with more channels than it has.
preprocessing fit_preprocessing(const dataset& train, const preprocessing_options& options, const runtime& rt);
/// GCN (scale 55) when `gcn`, then ZCA when `zca`.
preprocessing fit_preprocessing(const dataset& train, bool gcn, bool zca, float zca_bias, const runtime& rt);

/// The SVHN split of Lin et al. and Hubara et al. (pylearn2 datasets/svhn.py split_train_valid, the
/// 'splitted_train' and 'valid' sets of hantek/BinaryConnect svhn.py): a class-balanced validation set of
/// `per_class_train` examples of each class drawn from `train` and `per_class_extra` from `extra` (400 and
/// 200: 6,000 images), the rest of both as training data. Returns train-rest, extra-rest, then the
/// validation examples last (train's then extra's, each by class), so that train_config::validation =
/// 10 * (per_class_train + per_class_extra) holds them out. Drawn with a fixed key, as pylearn2 draws with
/// a fixed seed (322). Throws fewmul::error when a class has too few examples.
dataset svhn_balanced_split(const dataset& train, const dataset& extra, std::size_t per_class_train = 400,
                            std::size_t per_class_extra = 200);

}  // namespace fewmul
