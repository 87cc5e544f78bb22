#pragma once
// gemm_xnor: XNOR-popcount GEMM of bit-packed operands (contract in fewmul/kernels.hpp).
#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct gemm_xnor_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::for_each_tile;

  // ---- XNOR-popcount GEMM ---------------------------------------------------------------------------
  // Tiles of MR rows x NV vectors of 64-bit lanes (columns); per word: broadcast A's word, XOR with B's
  // words of those columns, add the lane popcounts. Counts stay exact in 64-bit lanes.
  using wb = simd_compat::u64batch<A>;
  static constexpr std::size_t word_lanes = wb::size;

  static void gemm_xnor(const gemm_xnor_params& p) noexcept {
    const std::size_t m = p.m, n = p.n, k_words = p.k_words, lda = p.lda, ldbt = p.ldbt, ldc = p.ldc;
    const std::int32_t k_bits = p.k_bits;
    const std::uint64_t *a = p.a, *bt = p.bt;
    std::int32_t* c = p.c;
    auto tile = [&]<std::size_t R, std::size_t V>(std::size_t i0, std::size_t j0) {
      wb different[R][V];
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < V; ++v) different[r][v] = wb(std::uint64_t{0});
      for (std::size_t w = 0; w < k_words; ++w) {
        wb b[V];
        for (std::size_t v = 0; v < V; ++v) b[v] = wb::load_unaligned(bt + w * ldbt + j0 + v * word_lanes);
        for (std::size_t r = 0; r < R; ++r) {
          const wb av(a[(i0 + r) * lda + w]);
          for (std::size_t v = 0; v < V; ++v)
            different[r][v] = different[r][v] + simd_compat::popcount_lanes<A>(av ^ b[v]);
        }
      }
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < V; ++v) {
          alignas(64) std::uint64_t lanes_out[word_lanes];
          different[r][v].store_aligned(lanes_out);
          for (std::size_t l = 0; l < word_lanes; ++l)
            c[(i0 + r) * ldc + j0 + v * word_lanes + l] = k_bits - 2 * static_cast<std::int32_t>(lanes_out[l]);
        }
    };
    auto column = [&](std::size_t i, std::size_t j) {
      std::int32_t different = 0;
      for (std::size_t w = 0; w < k_words; ++w)
        different += static_cast<std::int32_t>(__builtin_popcountll(a[i * lda + w] ^ bt[w * ldbt + j]));
      c[i * ldc + j] = k_bits - 2 * different;
    };
    for_each_tile(m, n, tile, column, word_lanes);
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
