#pragma once
// Peak rates of each GEMM kernel's inner instruction mix on this CPU, measured by short in-register
// loops (no memory traffic), so a benchmark can report the fraction of the reachable peak it attains.
#include "fewmul/isa.hpp"

namespace fewmul_bench {

enum class mix { f32_fma, binary_lookup, ternary_lookup, shift_add, xnor_popcount };

/// Products per second of `m` on `which` (one thread), measured once per process; 0 where this ISA has no
/// loop for it (scalar, sse4.2, neon64).
double peak_products_per_second(mix m, fewmul::isa which);

}  // namespace fewmul_bench
