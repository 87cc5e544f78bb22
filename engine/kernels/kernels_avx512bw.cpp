// The avx512bw instantiation of the kernel template; compiled with only this ISA's flags.
#include "kernels/kernels_simd.hpp"

namespace fewmul::kernels::detail {

kernel_table make_avx512bw_table() { return simd_kernels<xsimd::avx512bw>::table(fewmul::isa::avx512bw); }

}  // namespace fewmul::kernels::detail
