// The sse4_2 instantiation of the kernel template; compiled with only this ISA's flags.
#include "kernels/kernels_simd.hpp"

namespace fewmul::kernels::detail {

kernel_table make_sse4_2_table() { return simd_kernels<xsimd::sse4_2>::table(fewmul::isa::sse4_2); }

}  // namespace fewmul::kernels::detail
