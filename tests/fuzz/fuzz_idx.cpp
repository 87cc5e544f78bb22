// MNIST IDX images and labels, plain or gzip-compressed (zlib reads both through one path).
#include "fewmul/data.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_file(data, size, ".idx", [](const std::string& path) {
    try {
      fewmul::load_idx_images(path, 28, 28);
    } catch (const fewmul::error&) {
    }
    fewmul::load_idx_labels(path, 9);
  });
}
