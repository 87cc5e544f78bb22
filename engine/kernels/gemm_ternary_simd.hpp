#pragma once
// gemm_ternary: entry point of the grouped lookup (gemm_lookup_simd.hpp) with groups of 3.
#include "kernels/gemm_lookup_simd.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct gemm_ternary_simd {
  using lookup = gemm_lookup_simd<A>;
  static void gemm_ternary(const gemm_ternary_params& p) noexcept {
    lookup::template run<3>(
        {p.m, p.n, p.k, p.a, p.a_rs, p.a_cs, p.sign, p.nonzero, p.ldb, p.c, p.ldc, p.caches, p.workspace});
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
