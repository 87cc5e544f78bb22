// CIFAR-10 binary batch files.
#include "fewmul/data.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_file(data, size, ".bin", [](const std::string& path) { fewmul::load_cifar10_batch(path); });
}
