#pragma once
// libFuzzer targets for fewmul's parsers. The loaders take paths, so each input is written to a
// per-process temporary file first. fewmul::error is the expected outcome for malformed input; any
// other exception, a crash, a sanitizer report, a leak or an oversized allocation is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fewmul/error.hpp"

template <class Parse>
int fuzz_file(const std::uint8_t* data, std::size_t size, const char* suffix, Parse&& parse) {
  static const std::string path = "/tmp/fewmul_fuzz_" + std::to_string(::getpid()) + suffix;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  try {
    parse(path);
  } catch (const fewmul::error&) {
  }
  return 0;
}
