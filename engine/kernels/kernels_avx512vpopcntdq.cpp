// The avx512bw instantiation of the kernel template compiled with VPOPCNTDQ as well, so gemm_xnor counts
// bits with vpopcntq instead of the pshufb nibble table; everything else is the avx512bw code.
#include "kernels/kernels_simd.hpp"

#if !defined(__AVX512VPOPCNTDQ__)
#error "this unit must be compiled with -mavx512vpopcntdq"
#endif

namespace fewmul::kernels::detail {

kernel_table make_avx512vpopcntdq_table() { return simd_kernels<xsimd::avx512bw>::table(fewmul::isa::avx512vpopcntdq); }

}  // namespace fewmul::kernels::detail
