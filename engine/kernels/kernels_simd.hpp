#pragma once
// The one xsimd template behind every SIMD kernel variant, one header per kernel stem (<stem>_simd.hpp,
// see engine/kernels/README.md). Each kernels_<isa>.cpp instantiates it for its own xsimd architecture and
// is compiled with only that ISA's flags.
#include <algorithm>
#include <cstddef>

#include "fewmul/kernels.hpp"
#include "kernels/batch_norm_simd.hpp"
#include "kernels/conv_binary_simd.hpp"
#include "kernels/gemm_binary_simd.hpp"
#include "kernels/gemm_blocking.hpp"
#include "kernels/gemm_f32_simd.hpp"
#include "kernels/gemm_lookup_simd.hpp"
#include "kernels/gemm_shift_simd.hpp"
#include "kernels/gemm_ternary_simd.hpp"
#include "kernels/gemm_xnor_simd.hpp"
#include "kernels/max_pool_simd.hpp"
#include "kernels/pack_simd.hpp"
#include "kernels/quantize_pow2_simd.hpp"
#include "kernels/update_weights_simd.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct simd_kernels {
  using f32 = gemm_f32_simd<A>;
  using lookup = gemm_lookup_simd<A>;
  using shift = gemm_shift_simd<A>;

  static std::size_t workspace_bytes(const cache_sizes& caches) noexcept {
    return std::max(
        {f32_workspace_bytes(caches, f32::f32_mr, f32::panel_nr),
         shift_workspace_bytes(caches, f32::sparse_mr, f32::sparse_nr), lookup::template workspace<4>(caches),
         lookup::template workspace<3>(caches), shift_workspace_bytes(caches, shift::shift_mr, shift::shift_nr),
         shift_workspace_bytes(caches, shift::shift_mr, shift::list_nr), conv_binary_workspace_bytes(caches) + 256});
  }

  static kernel_table table(fewmul::isa which) {
    return kernel_table{which,
                        &pack_simd<A>::pack_binary,
                        &pack_simd<A>::pack_ternary,
                        &f32::gemm_f32,
                        &gemm_binary_simd<A>::gemm_binary,
                        &gemm_ternary_simd<A>::gemm_ternary,
                        &shift::gemm_shift,
                        &quantize_pow2_simd<A>::quantize_pow2,
                        &gemm_xnor_simd<A>::gemm_xnor,
                        &conv_binary_simd<A>::conv_binary,
                        &update_weights_simd<A>::update_weights,
                        &max_pool_simd<A>::max_pool_forward,
                        &max_pool_simd<A>::max_pool_backward,
                        &batch_norm_simd<A>::batch_norm_forward,
                        &batch_norm_simd<A>::batch_norm_inference,
                        &batch_norm_simd<A>::batch_norm_sums,
                        &batch_norm_simd<A>::batch_norm_backward,
                        f32::panel_nr,
                        &workspace_bytes};
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
