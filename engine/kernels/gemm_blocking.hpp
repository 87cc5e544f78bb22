#pragma once
// Cache blocking of the packed GEMMs (gemm_f32, gemm_binary), derived from the cache sizes the CPU
// reports, never tuned to one CPU. Shared by every ISA's kernels and by kernel_table::workspace_bytes.
//
// gemm_f32 (BLIS order: K block -> N block -> pack B -> M block -> pack A -> column panel -> row panel):
//   the B micro-panel (kc x nr floats) stays in half of L1 while every A micro-panel of the M block
//   passes it, the packed A block (mc x kc floats) in half of L2, the packed B block (kc x nc) in half
//   of the L3 share.
// gemm_binary and gemm_ternary, grouped lookup over groups of `group` k (4 and 3) (K block -> N block ->
//   pack B indices -> row panel -> build tables -> column panel): a row panel's lookup tables (mr rows x
//   kc/group groups x 16 or 32 floats) stay in half of L1 while all column panels pass them; the packed
//   indices of the N block (kc/group x nc int32) in half of L2.
// gemm_shift (K block -> M block -> lists of nonzero codes -> column panel -> pack B -> row panel): the B
//   panel ((kc + 1) x nr floats, one row of zeros for padding) stays in three quarters of L1 while
//   every row panel of the M block passes it; the M block's lists (mc x kc entries of 8 bytes) in half of L2.
// Blocks only decide where a K block stops and starts again, never the order of a sum, so any cache
// sizes give the same bits.
#include <algorithm>
#include <cstddef>

#include "fewmul/kernels.hpp"

namespace fewmul::kernels::detail {

struct gemm_blocks {
  std::size_t kc, mc, nc;
};

constexpr std::size_t round_down(std::size_t x, std::size_t step) { return x / step * step; }
constexpr std::size_t round_up(std::size_t x, std::size_t step) { return (x + step - 1) / step * step; }

constexpr gemm_blocks f32_blocks(const cache_sizes& c, std::size_t mr, std::size_t nr) {
  const std::size_t kc = std::clamp<std::size_t>(round_down(c.l1 / 2 / (nr * 4), 8), 8, 1024);
  const std::size_t mc = std::clamp<std::size_t>(round_down(c.l2 / 2 / (kc * 4), mr), mr, 4096);
  const std::size_t nc = std::clamp<std::size_t>(round_down(c.l3 / 2 / (kc * 4), nr), nr, 16384);
  return {kc, mc, nc};
}
// The K blocks of one gemm_f32 call: the depth cut into the nearest whole number of blocks of about kc, equal
// up to rounding to 8, so no block is a thin remainder (a training step's weight gradient has K = the batch: at
// 200 rows and kc = 192 a second block of 8 read and wrote the whole of C again for 8 products each). A block
// is at most 1.5 kc deep (K < 1.5 kc: one block), which the workspace allows for.
constexpr std::size_t f32_kc_max(std::size_t kc) { return kc * 3 / 2 / 8 * 8 + 8; }
constexpr std::size_t f32_balanced_kc(std::size_t k, std::size_t kc) {
  const std::size_t blocks = std::max<std::size_t>(1, (2 * k + kc) / (2 * kc));  // nearest whole number
  return std::min(round_up((k + blocks - 1) / blocks, 8), f32_kc_max(kc));
}
constexpr std::size_t f32_workspace_bytes(const cache_sizes& c, std::size_t mr, std::size_t nr) {
  const gemm_blocks b = f32_blocks(c, mr, nr);
  return 4 * (b.mc * f32_kc_max(b.kc) + f32_kc_max(b.kc) * b.nc) + 128;
}

// K blocks are multiples of 12, so every block starts at a group boundary for groups of 4 and of 3.
constexpr gemm_blocks lookup_blocks(const cache_sizes& c, std::size_t group, std::size_t entries, std::size_t mr,
                                    std::size_t nr) {
  const std::size_t kc = std::clamp<std::size_t>(round_down(c.l1 / 2 * group / (4 * entries * mr), 12), 12, 2040);
  const std::size_t nc = std::clamp<std::size_t>(round_down(c.l2 / 2 * group / (4 * kc), nr), nr, 16384);
  return {kc, mr, nc};
}
constexpr std::size_t lookup_workspace_bytes(const cache_sizes& c, std::size_t group, std::size_t entries,
                                             std::size_t mr, std::size_t nr) {
  const gemm_blocks b = lookup_blocks(c, group, entries, mr, nr);
  const std::size_t groups = (b.kc + group - 1) / group;
  return 4 * groups * b.nc + 4 * entries * mr * groups + 128;
}

// kc at most shift_kc_max: the list-driven tiles keep panel rows, up to the padding row kc, in 16 bits
// (simd_common.hpp).
inline constexpr std::size_t shift_kc_max = 4096;
constexpr gemm_blocks shift_blocks(const cache_sizes& c, std::size_t mr, std::size_t nr) {
  const std::size_t kc = std::clamp<std::size_t>(round_down(c.l1 * 3 / 4 / (nr * 4), 4), 4, shift_kc_max);
  const std::size_t mc = std::clamp<std::size_t>(round_down(c.l2 / 2 / (kc * 8), mr), mr, 4096);
  return {kc, mc, nr};
}
constexpr std::size_t shift_workspace_bytes(const cache_sizes& c, std::size_t mr, std::size_t nr) {
  const gemm_blocks b = shift_blocks(c, mr, nr);
  return 8 * b.mc * b.kc + 4 * b.mc / mr + 4 * (b.kc + 1) * nr + 256;
}

// conv_binary: per-pixel tables of a band of input rows, one panel of weight indices (at most 64 columns)
// and the tables of a zero pixel, within about the L2 cache.
constexpr std::size_t conv_binary_workspace_bytes(const cache_sizes& c) {
  return std::max<std::size_t>(c.l2, std::size_t{256} << 10);
}
constexpr std::size_t conv_binary_fixed_bytes(std::size_t channels, std::size_t kernel) {
  const std::size_t groups = channels / 4, k_groups = kernel * kernel * groups;
  return 4 * 16 * groups + 4 * 64 * k_groups + 3 * 64;  // zero tables, index panel, alignment
}
constexpr std::size_t conv_binary_row_bytes(std::size_t width, std::size_t channels) {
  return 4 * 16 * width * (channels / 4);  // one input row's tables
}

}  // namespace fewmul::kernels::detail
