#include "fewmul/isa.hpp"

#include <atomic>
#include <string>

#include "fewmul/error.hpp"

namespace fewmul {
namespace {

bool cpu_has(isa which) {
  switch (which) {
    case isa::scalar:
      return true;
#if defined(FEWMUL_HAVE_X86_KERNELS)
    // __builtin_cpu_supports also checks that the OS saves the wider registers.
    case isa::sse4_2:
      return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt");
    case isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
    case isa::avx512bw:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("bmi2");
    case isa::avx512vpopcntdq:
      return cpu_has(isa::avx512bw) && __builtin_cpu_supports("avx512vpopcntdq");
#endif
#if defined(FEWMUL_HAVE_NEON_KERNELS)
    case isa::neon64:
      return true;  // Advanced SIMD is mandatory on AArch64.
#endif
    default:
      return false;
  }
}

constexpr isa all_isas[] = {isa::scalar, isa::sse4_2, isa::avx2, isa::avx512bw, isa::avx512vpopcntdq, isa::neon64};

std::atomic<int>& forced() {
  static std::atomic<int> value{-1};
  return value;
}

}  // namespace

std::string_view isa_name(isa which) {
  switch (which) {
    case isa::scalar:
      return "scalar";
    case isa::sse4_2:
      return "sse4.2";
    case isa::avx2:
      return "avx2";
    case isa::avx512bw:
      return "avx512bw";
    case isa::avx512vpopcntdq:
      return "avx512vpopcntdq";
    case isa::neon64:
      return "neon64";
  }
  return "unknown";
}

isa parse_isa(std::string_view name) {
  if (name == "auto") return best_isa();
  for (isa which : all_isas)
    if (isa_name(which) == name) return which;
  throw error("unknown ISA '" + std::string(name) +
              "' (expected auto, scalar, sse4.2, avx2, avx512bw, avx512vpopcntdq or neon64)");
}

bool isa_supported(isa which) { return cpu_has(which); }

std::vector<isa> supported_isas() {
  std::vector<isa> out;
  for (isa which : all_isas)
    if (isa_supported(which)) out.push_back(which);
  return out;
}

isa best_isa() {
  static const isa best = supported_isas().back();
  return best;
}

void force_isa(isa which) {
  if (!isa_supported(which))
    throw error("ISA '" + std::string(isa_name(which)) + "' is not supported by this CPU or this build");
  forced().store(static_cast<int>(which));
}

isa active_isa() {
  const int value = forced().load();
  return value < 0 ? best_isa() : static_cast<isa>(value);
}

}  // namespace fewmul
