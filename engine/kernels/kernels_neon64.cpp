// The neon64 instantiation of the kernel template; compiled with only this ISA's flags.
#include "kernels/kernels_simd.hpp"

namespace fewmul::kernels::detail {

kernel_table make_neon64_table() { return simd_kernels<xsimd::neon64>::table(fewmul::isa::neon64); }

}  // namespace fewmul::kernels::detail
