#include <cstring>

#include "fewmul/kernels.hpp"

namespace fewmul::kernels {
namespace {

// In-place transpose of a 64x64 bit block, row i = a[i], column j = bit j (LSB first).
// Classic recursive block swap (Hacker's Delight 7-3), mirrored for LSB-first columns: at each level
// the upper-right j x j sub-blocks trade places with the lower-left ones.
void transpose64(std::uint64_t a[64]) {
  std::uint64_t mask = 0x00000000ffffffffull;
  for (unsigned j = 32; j != 0; j >>= 1, mask ^= mask << j) {
    for (unsigned k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const std::uint64_t t = ((a[k] >> j) ^ a[k | j]) & mask;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
  }
}

}  // namespace

void transpose_bits(const std::uint64_t* in, std::size_t rows, std::size_t cols, std::size_t ldi, std::uint64_t* out,
                    std::size_t ldo) noexcept {
  std::uint64_t block[64];
  for (std::size_t rb = 0; rb < rows; rb += 64) {
    const std::size_t block_rows = rows - rb < 64 ? rows - rb : 64;
    for (std::size_t cb = 0; cb < cols; cb += 64) {
      for (std::size_t i = 0; i < 64; ++i) block[i] = i < block_rows ? in[(rb + i) * ldi + cb / 64] : 0;
      transpose64(block);
      const std::size_t block_cols = cols - cb < 64 ? cols - cb : 64;
      for (std::size_t j = 0; j < block_cols; ++j) out[(cb + j) * ldo + rb / 64] = block[j];
    }
  }
}

}  // namespace fewmul::kernels
