// The cache sizes the packed GEMMs block for, as Linux reports them (sysfs), read once per call.
#include <cstdio>
#include <string>

#include "fewmul/kernels.hpp"

namespace fewmul::kernels {
namespace {

// Reads the first line of `path` into `out`; false when the file is absent or empty.
bool read_line(const std::string& path, std::string& out) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return false;
  char buffer[128] = {};
  const bool ok = std::fgets(buffer, sizeof buffer, f) != nullptr;
  std::fclose(f);
  out = buffer;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return ok && !out.empty();
}

// "48K", "1024K", "32M" -> bytes; 0 when unreadable.
std::size_t parse_size(const std::string& text) {
  std::size_t value = 0, i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i)
    value = value * 10 + static_cast<std::size_t>(text[i] - '0');
  if (i < text.size() && (text[i] == 'K' || text[i] == 'k')) value *= 1024;
  if (i < text.size() && (text[i] == 'M' || text[i] == 'm')) value *= 1024 * 1024;
  return value;
}

// CPUs listed in "0-3,8,10-11".
std::size_t count_cpus(const std::string& list) {
  std::size_t count = 0, i = 0;
  while (i < list.size()) {
    std::size_t first = 0, last = 0;
    for (; i < list.size() && list[i] >= '0' && list[i] <= '9'; ++i)
      first = first * 10 + static_cast<std::size_t>(list[i] - '0');
    last = first;
    if (i < list.size() && list[i] == '-') {
      last = 0;
      for (++i; i < list.size() && list[i] >= '0' && list[i] <= '9'; ++i)
        last = last * 10 + static_cast<std::size_t>(list[i] - '0');
    }
    count += last >= first ? last - first + 1 : 1;
    while (i < list.size() && (list[i] < '0' || list[i] > '9')) ++i;
  }
  return count;
}

}  // namespace

cache_sizes detect_cache_sizes() noexcept {
  cache_sizes sizes;
  try {
    for (int index = 0; index < 8; ++index) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
      std::string level, type, size, shared;
      if (!read_line(dir + "level", level) || !read_line(dir + "type", type) || !read_line(dir + "size", size))
        continue;
      if (type == "Instruction") continue;
      const std::size_t bytes = parse_size(size);
      if (bytes == 0) continue;
      if (level == "1") sizes.l1 = bytes;
      if (level == "2") sizes.l2 = bytes;
      if (level == "3") {
        // One core's share of a cache the whole package shares.
        const std::size_t cpus = read_line(dir + "shared_cpu_list", shared) ? count_cpus(shared) : 1;
        sizes.l3 = bytes / (cpus > 0 ? cpus : 1);
      }
    }
  } catch (...) {
    return cache_sizes{};  // std::string allocation failed: the defaults are safe
  }
  return sizes;
}

}  // namespace fewmul::kernels
