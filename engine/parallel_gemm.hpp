#pragma once
// Splits a GEMM's m x n output into a fixed grid of blocks (independent of the thread count) and runs
// them on the runtime. Column blocks start at multiples of 64, so packed-bit operands can be offset by
// whole words. Each output element is still one sequential sum, so the split never changes results.
#include <algorithm>
#include <cstddef>

#include "fewmul/runtime.hpp"

namespace fewmul::detail {

constexpr std::size_t gemm_block_rows = 32;
constexpr std::size_t gemm_block_cols = 128;

/// Calls block(i0, i1, j0, j1) for each block of the grid, in parallel.
template <class Block>
void parallel_gemm(const runtime& rt, std::size_t m, std::size_t n, Block&& block) {
  const std::size_t row_blocks = (m + gemm_block_rows - 1) / gemm_block_rows;
  const std::size_t col_blocks = (n + gemm_block_cols - 1) / gemm_block_cols;
  rt.parallel_for(row_blocks * col_blocks, [&](std::size_t task) {
    const std::size_t rb = task / col_blocks, cb = task % col_blocks;
    const std::size_t i0 = rb * gemm_block_rows, j0 = cb * gemm_block_cols;
    block(i0, std::min(m, i0 + gemm_block_rows), j0, std::min(n, j0 + gemm_block_cols));
  });
}

/// Calls body(r0, r1) over fixed chunks of `rows` rows, in parallel.
template <class Body>
void parallel_rows(const runtime& rt, std::size_t rows, std::size_t chunk, Body&& body) {
  const std::size_t chunks = (rows + chunk - 1) / chunk;
  rt.parallel_for(chunks, [&](std::size_t c) { body(c * chunk, std::min(rows, (c + 1) * chunk)); });
}

}  // namespace fewmul::detail
