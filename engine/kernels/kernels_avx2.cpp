// The avx2 instantiation of the kernel template; compiled with only this ISA's flags.
#include "kernels/kernels_simd.hpp"

namespace fewmul::kernels::detail {

kernel_table make_avx2_table() { return simd_kernels<xsimd::avx2>::table(fewmul::isa::avx2); }

}  // namespace fewmul::kernels::detail
