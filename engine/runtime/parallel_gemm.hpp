#pragma once
// Runs a GEMM's m x n output as a grid of blocks on the runtime, and owns what the packed GEMM kernels
// need from the op layer: the CPU's cache sizes and one workspace per thread.
//
// Every output element is one sum whose order the kernel fixes (see fewmul/kernels.hpp), whichever block
// computes it, so the grid may follow the thread count without changing a bit. About one block per thread,
// split so that each task reads the smaller share of the larger operand (gemm_split): by columns when B is
// float weights (blocks of at least 256 columns, so that no two tasks pack the same panels of B: fp32 MNIST
// MLP training +6% against two blocks per thread); by rows when B is bits, so that each task reads only its
// rows of the activations A instead of all of them (a 1024-wide layer's B is 128 KiB of bits, its A at batch
// 200 is 800 KiB of floats). Rows first, MNIST MLP training on 2 threads (AMD EPYC Zen 5, interleaved A/B):
// bc +12%, bc+qbp +13%, tc+qbp +25% against the columns-first grid in its slow streaks, +1-3% in its fast
// ones; the weight gradient's shift GEMM measured 6% slower split by rows, so it keeps columns. Column blocks start at
// multiples of 64, so packed-bit operands can be offset by whole words.
#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "fewmul/kernels.hpp"
#include "fewmul/runtime.hpp"

namespace fewmul::detail {

/// Which side of a GEMM the grid splits first: `columns` when B is the large operand (float weights),
/// `rows` when A is (B is bits).
enum class gemm_split { columns, rows };

/// Calls block(i0, i1, j0, j1) for each block of the grid, in parallel.
template <class Block>
void parallel_gemm(const runtime& rt, std::size_t m, std::size_t n, Block&& block,
                   gemm_split split = gemm_split::columns) {
  if (m == 0 || n == 0) return;
  const std::size_t threads = static_cast<std::size_t>(std::max(1, rt.threads()));
  const auto cols_for = [&](std::size_t target, std::size_t least) {  // a multiple of 64
    return std::max<std::size_t>(least, ((n + target - 1) / target + 63) / 64 * 64);
  };
  // Row blocks are equal (any row count runs, and a block's rows do not change its sums), at least 16 rows each.
  std::size_t row_blocks = 1, block_cols;
  if (split == gemm_split::columns) {
    block_cols = cols_for(threads, 256);
    const std::size_t col_blocks = (n + block_cols - 1) / block_cols;
    row_blocks = std::max<std::size_t>(1, std::min((threads + col_blocks - 1) / col_blocks, m / 16));
  } else {
    // As many row blocks as the largest divisor of the thread count that leaves each 16 rows; the columns take
    // the rest of the threads: at batch 200, 2 threads 2 x 1 blocks of 100 rows, 16 threads 8 x 2 blocks of 25
    // rows x 512 columns.
    for (std::size_t d = 2; d <= threads; ++d)
      if (threads % d == 0 && 16 * d <= m) row_blocks = d;
    block_cols = cols_for(threads / row_blocks, 64);
  }
  const std::size_t col_blocks = (n + block_cols - 1) / block_cols;
  auto task = [&](std::size_t t) {
    const std::size_t rb = t / col_blocks, cb = t % col_blocks;
    const std::size_t j0 = cb * block_cols;
    block(m * rb / row_blocks, m * (rb + 1) / row_blocks, j0, std::min(n, j0 + block_cols));
  };
  rt.parallel_for(row_blocks * col_blocks, task);
}

/// Calls body(r0, r1) over fixed chunks of `rows` rows, in parallel.
template <class Body>
void parallel_rows(const runtime& rt, std::size_t rows, std::size_t chunk, Body&& body) {
  const std::size_t chunks = (rows + chunk - 1) / chunk;
  auto task = [&](std::size_t c) { body(c * chunk, std::min(rows, (c + 1) * chunk)); };
  rt.parallel_for(chunks, task);
}

/// The cache sizes of this CPU, detected once.
const kernels::cache_sizes& gemm_caches();
/// This thread's workspace for the packed GEMMs of `k`: allocated on first use, grown if ever needed,
/// then reused by every call on this thread.
void* gemm_workspace(const kernels::kernel_table& k);

/// Runs one of k's packed GEMMs (gemm_f32, gemm_binary, gemm_ternary, gemm_shift) on `p` with this CPU's
/// cache sizes and this thread's workspace: run_packed_gemm(k, k.gemm_f32, {.m = ..., ...}).
template <class Params>
void run_packed_gemm(const kernels::kernel_table& k, void (*gemm)(const Params&) noexcept,
                     std::type_identity_t<Params> p) {
  p.caches = gemm_caches();
  p.workspace = gemm_workspace(k);
  gemm(p);
}

}  // namespace fewmul::detail
