#pragma once
#include <string_view>
#include <vector>

namespace fewmul {

/// Instruction sets that have their own kernel table. `scalar` is the plain reference code.
enum class isa {
  scalar,
  sse4_2,
  avx2,
  avx512bw,
  avx512vpopcntdq,  ///< avx512bw plus the VPOPCNTDQ vector popcount (XNOR-popcount GEMM)
  neon64
};

/// Lower-case name as accepted by `--isa`: scalar, sse4.2, avx2, avx512bw, avx512vpopcntdq,
/// neon64.
std::string_view isa_name(isa which);
/// Parses a name from isa_name() (or "auto" for the best supported); throws fewmul::error otherwise.
isa parse_isa(std::string_view name);
/// True when this binary has kernels for `which` and this CPU (and OS) can run them.
bool isa_supported(isa which);
/// All ISAs usable here, scalar first, best last.
std::vector<isa> supported_isas();
/// The best ISA usable here; what the engine uses unless force_isa() was called.
isa best_isa();
/// Makes every later kernel call use `which`; throws fewmul::error when it is not supported here.
void force_isa(isa which);
/// The ISA the engine currently uses.
isa active_isa();

}  // namespace fewmul
