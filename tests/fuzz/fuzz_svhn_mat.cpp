// SVHN MAT-files (MATLAB 5), with plain and zlib-compressed elements.
#include "fewmul/data.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_file(data, size, ".mat", [](const std::string& path) { fewmul::load_svhn_mat(path); });
}
