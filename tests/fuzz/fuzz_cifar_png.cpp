// The CIFAR-10 package conversion: PNG sprite sheets (libspng) and the JSON label arrays.
#include "data/cifar_convert.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    fewmul_app::parse_label_json(std::string(reinterpret_cast<const char*>(data), size), "labels.json");
  } catch (const fewmul::error&) {
  }
  return fuzz_file(data, size, ".png", [](const std::string& path) {
    std::size_t height = 0;
    fewmul_app::decode_sheet(path, height);
  });
}
