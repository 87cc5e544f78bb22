#pragma once
// gemm_binary: entry point of the grouped lookup (gemm_lookup_simd.hpp) with groups of 4.
#include "kernels/gemm_lookup_simd.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct gemm_binary_simd {
  using lookup = gemm_lookup_simd<A>;
  static void gemm_binary(const gemm_binary_params& p) noexcept {
    lookup::template run<4>(
        {p.m, p.n, p.k, p.a, p.a_rs, p.a_cs, p.bits, nullptr, p.ldb, p.c, p.ldc, p.caches, p.workspace});
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
