#pragma once
// gemm_f32: packed float GEMM with explicit fused multiply-adds (contract in fewmul/kernels.hpp).
#include <bit>

#include "kernels/gemm_operands.hpp"
#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct gemm_f32_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lanes;
  using base::load_panel_tile;
  using base::nv;
  using base::store_panel_tile;
  using typename base::fb;
  using typename base::ub;

  // ---- packed GEMMs (gemm_f32, gemm_binary) --------------------------------------------------------
  // Blocked as gemm_blocking.hpp says; both operands packed into the workspace as zero-padded panels, so
  // the register tile never sees a ragged edge: padded rows and columns compute values nobody stores.
  // Each K block continues the accumulator the previous one stored in C.
  static constexpr std::size_t f32_mr = lanes == 16 ? 12 : 6;  // rows of the register tile
  static constexpr std::size_t panel_nr = nv * lanes;          // columns of the register tile, divides 64

  // f32: A(ic.., pc..) into row panels [rows/mr][kb][mr]; B(pc.., jc..) into column panels [cols/nr][kb][nr].
  static void pack_a_f32(const gemm_f32_params& p, std::size_t ic, std::size_t mb, std::size_t pc, std::size_t kb,
                         float* out) {
    for (std::size_t i0 = 0; i0 < mb; i0 += f32_mr) {
      float* panel = out + i0 * kb;
      const std::size_t h = std::min(f32_mr, mb - i0);
      const float* src = p.a + (ic + i0) * p.a_rs + pc * p.a_cs;
      if (p.a_cs == 1) {
        for (std::size_t r = 0; r < h; ++r)
          for (std::size_t q = 0; q < kb; ++q) panel[q * f32_mr + r] = src[r * p.a_rs + q];
      } else {
        for (std::size_t q = 0; q < kb; ++q)
          for (std::size_t r = 0; r < h; ++r) panel[q * f32_mr + r] = src[r * p.a_rs + q * p.a_cs];
      }
      for (std::size_t q = 0; q < kb; ++q)
        for (std::size_t r = h; r < f32_mr; ++r) panel[q * f32_mr + r] = 0.0f;
    }
  }
  static void copy_floats(const float* src, std::size_t count, float* dst) {
    std::size_t u = 0;
    for (; u + lanes <= count; u += lanes) fb::load_unaligned(src + u).store_unaligned(dst + u);
    for (; u < count; ++u) dst[u] = src[u];
  }
  // B(q, n .. n + w) into the panel row dst [width], zero-padded: one contiguous run for a row-major B, the
  // panel's runs (located once per panel) for an indirection buffer, in vectors where a run holds them (a
  // convolution with 32 channels fills the 64-column panel of skip_zero_a with two).
  template <std::size_t width = panel_nr>
  static void copy_b_row(const gemm_f32_params& p, std::size_t q, std::size_t n, std::size_t w,
                         const segment_runs& runs, float* dst) {
    if (p.b_rows) {
      const float* const* row = p.b_rows + q * p.ldb;
      for (std::size_t r = 0; r < runs.count; ++r) {
        const auto& run = runs.runs[r];
        copy_floats(row[run.segment] + run.within, run.length, dst + run.offset);
      }
    } else if (!p.b_transposed && w == width) {
      for (std::size_t v = 0; v < width / lanes; ++v)
        fb::load_unaligned(p.b + q * p.ldb + n + v * lanes).store_aligned(dst + v * lanes);
      return;
    } else {
      for (std::size_t j = 0; j < w; ++j) dst[j] = gemm_f32_b(p, q, n + j);
    }
    for (std::size_t j = w; j < width; ++j) dst[j] = 0.0f;
  }
  static void pack_b_f32(const gemm_f32_params& p, std::size_t pc, std::size_t kb, std::size_t jc, std::size_t nb,
                         float* out) {
    for (std::size_t j0 = 0; j0 < nb; j0 += panel_nr) {
      float* panel = out + j0 * kb;
      const std::size_t w = std::min(panel_nr, nb - j0);
      if (p.b_transposed) {  // B(k, n) = b[n * ldb + k]: each column is contiguous along k
        for (std::size_t j = 0; j < w; ++j) {
          const float* src = p.b + (jc + j0 + j) * p.ldb + pc;
          for (std::size_t q = 0; q < kb; ++q) panel[q * panel_nr + j] = src[q];
        }
        for (std::size_t j = w; j < panel_nr; ++j)
          for (std::size_t q = 0; q < kb; ++q) panel[q * panel_nr + j] = 0.0f;
        continue;
      }
      const segment_runs runs = runs_of(p.b_rows != nullptr, p.b_column + jc + j0, w, p.b_segment);
      for (std::size_t q = 0; q < kb; ++q) copy_b_row(p, pc + q, jc + j0, w, runs, panel + q * panel_nr);
    }
  }
  // Where the tile reads A: a packed row panel ([kb][mr]), or A itself through its strides (rows past h
  // read row h - 1 again; their sums are never stored).
  struct packed_rows {
    const float* panel;
    float at(std::size_t q, std::size_t r) const { return panel[q * f32_mr + r]; }
  };
  struct strided_rows {
    const float* row[f32_mr];
    std::size_t a_cs;
    float at(std::size_t q, std::size_t r) const { return row[r][q * a_cs]; }
  };
  // acc[r][v] = fma(A(r, q), B(q, v), acc[r][v]) for q in order: the reference's sum.
  template <class Rows>
  static void f32_tile(std::size_t kb, const Rows& a, const float* bp, float* c, std::size_t ldc, std::size_t h,
                       std::size_t w, bool first) {
    fb acc[f32_mr][nv];
    load_panel_tile(acc, first, c, ldc, h, w);
    for (std::size_t q = 0; q < kb; ++q) {
      fb bv[nv];
      for (std::size_t v = 0; v < nv; ++v) bv[v] = fb::load_aligned(bp + q * panel_nr + v * lanes);
      for (std::size_t r = 0; r < f32_mr; ++r) {
        const fb av(a.at(q, r));
        for (std::size_t v = 0; v < nv; ++v) acc[r][v] = simd_compat::fused_multiply_add<A>(av, bv[v], acc[r][v]);
      }
    }
    store_panel_tile(acc, c, ldc, h, w);
  }

  // Few rows (batch-1 inference): each element of B is used once or twice, so packing it would cost more
  // than the products; rows of up to four vectors of columns run over all of K straight from B.
  static void gemm_f32_few_rows(const gemm_f32_params& p) {
    constexpr std::size_t width = 4 * lanes;
    for (std::size_t i = 0; i < p.m; ++i)
      for (std::size_t j0 = 0; j0 < p.n; j0 += width) {
        const std::size_t w = std::min(width, p.n - j0);
        fb acc[4] = {fb(0.0f), fb(0.0f), fb(0.0f), fb(0.0f)};
        alignas(64) float row[width] = {};
        for (std::size_t q = 0; q < p.k; ++q) {
          const fb av(p.a[i * p.a_rs + q * p.a_cs]);
          const float* b = p.b + q * p.ldb + j0;
          if (w == width) {
            for (std::size_t v = 0; v < 4; ++v)
              acc[v] = simd_compat::fused_multiply_add<A>(av, fb::load_unaligned(b + v * lanes), acc[v]);
          } else {
            for (std::size_t j = 0; j < w; ++j) row[j] = b[j];
            for (std::size_t v = 0; v < 4; ++v)
              acc[v] = simd_compat::fused_multiply_add<A>(av, fb::load_aligned(row + v * lanes), acc[v]);
          }
        }
        alignas(64) float out[width];
        for (std::size_t v = 0; v < 4; ++v) acc[v].store_aligned(out + v * lanes);
        for (std::size_t j = 0; j < w; ++j) p.c[i * p.ldc + j0 + j] = out[j];
      }
  }

  // ---- skip_zero_a: A's nonzeros drive the loop -----------------------------------------------------
  // Each row of A becomes the list of its nonzero values in k order, (B's row in a packed panel
  // [kb + 1][sparse_nr], value) as simd_common.hpp lays lists out; the rows of a tile step through their lists
  // together, a shorter list padded with (the panel's extra row of zeros, 0), whose fma adds +0: acc unchanged.
  // Every row reads its own B rows, so a step's loads (its rows and values) are amortized over the tile's width
  // alone: four vectors, not the dense tile's two. Blocked as gemm_shift: one K block of the panel stays in L1
  // (B read in place instead, rows ldb apart, measured 1.7x slower on a convolution's weight gradient and 2.2x
  // on the MNIST MLP's, whose 4 KiB row stride maps every row to the same L1 sets).
  static constexpr std::size_t sparse_mr = list_tile_rows;
  static constexpr std::size_t sparse_nv = 4;
  static constexpr std::size_t sparse_nr = sparse_nv * lanes;
  // The list of rows i0 .. i0 + h of the K block [pc, pc + kb); returns its steps.
  static std::size_t build_sparse_lists(const gemm_f32_params& p, std::size_t i0, std::size_t h, std::size_t pc,
                                        std::size_t kb, tile_list list) {
    std::size_t counts[sparse_mr] = {};
    for (std::size_t q = 0; q < kb; ++q)     // k outer: the weight gradient's A is a transposed view (a_rs = 1)
      for (std::size_t r = 0; r < h; ++r) {  // branch-free: zeros are random, a branch would mispredict
        const float v = p.a[(i0 + r) * p.a_rs + (pc + q) * p.a_cs];
        list.set(counts[r], r, q, std::bit_cast<std::uint32_t>(v));
        counts[r] += v != 0.0f ? 1 : 0;
      }
    std::size_t steps = 0;
    for (std::size_t r = 0; r < h; ++r) steps = std::max(steps, counts[r]);
    for (std::size_t r = 0; r < sparse_mr; ++r)
      for (std::size_t s = r < h ? counts[r] : 0; s < steps; ++s) list.set(s, r, kb, 0u);  // 0.0f
    return steps;
  }
  // B rows pc .. pc + kb, columns j0 .. j0 + w, into [kb + 1][sparse_nr], zero-padded, the last row zeros.
  static void pack_b_sparse(const gemm_f32_params& p, std::size_t pc, std::size_t kb, std::size_t j0, std::size_t w,
                            float* panel) {
    const segment_runs runs = runs_of(p.b_rows != nullptr, p.b_column + j0, w, p.b_segment);
    for (std::size_t q = 0; q < kb; ++q) copy_b_row<sparse_nr>(p, pc + q, j0, w, runs, panel + q * sparse_nr);
    for (std::size_t j = 0; j < sparse_nr; ++j) panel[kb * sparse_nr + j] = 0.0f;
  }
  static void sparse_tile(std::size_t steps, tile_list list, const float* panel, float* c, std::size_t ldc,
                          std::size_t h, std::size_t w, bool first) {
    fb acc[sparse_mr][sparse_nv];
    load_panel_tile(acc, first, c, ldc, h, w);
    for (std::size_t s = 0; s < steps; ++s) {
      const auto step = list_step::at(list, s);
      const ub quad = simd_compat::load_quad<A>(step.values);
      for (std::size_t r = 0; r < list_tile_rows; ++r) {
        const fb av = simd_compat::as_float<A>(quad_value<A>(quad, r));
        const float* row = panel + step.row(r) * sparse_nr;
        for (std::size_t v = 0; v < sparse_nv; ++v)
          acc[r][v] = simd_compat::fused_multiply_add<A>(av, fb::load_aligned(row + v * lanes), acc[r][v]);
      }
    }
    store_panel_tile(acc, c, ldc, h, w);
  }
  static void gemm_f32_skip_zero_a(const gemm_f32_params& p) {
    const gemm_blocks bl = shift_blocks(p.caches, sparse_mr, sparse_nr);
    const auto ws = list_workspace_of<float>(p.workspace, bl);
    list_driven_loops(
        p.m, p.n, p.k, bl, sparse_mr, sparse_nr, ws.lists, ws.steps,
        [&](std::size_t i0, std::size_t h, std::size_t pc, std::size_t kb, list_slot* slots, std::uint32_t* steps) {
          steps[0] = static_cast<std::uint32_t>(build_sparse_lists(p, i0, h, pc, kb, tile_list_at(slots, kb)));
        },
        [&](std::size_t pc, std::size_t kb, std::size_t j0, std::size_t w) {
          pack_b_sparse(p, pc, kb, j0, w, ws.panel);
          return true;
        },
        [&](bool, std::size_t steps, tile_list list, std::size_t i0, std::size_t h, std::size_t j0, std::size_t w,
            bool first) { sparse_tile(steps, list, ws.panel, p.c + i0 * p.ldc + j0, p.ldc, h, w, first); });
  }

  static void gemm_f32(const gemm_f32_params& p) noexcept {
    if (p.m == 0 || p.n == 0) return;
    if (p.k == 0) return zero_output(p.m, p.n, p.c, p.ldc);
    if (p.skip_zero_a) return gemm_f32_skip_zero_a(p);
    if (p.m < 4 && !p.b_transposed && !p.b_rows) return gemm_f32_few_rows(p);
    gemm_blocks bl = f32_blocks(p.caches, f32_mr, panel_nr);
    float* a_pack = at_bytes<float>(p.workspace, 0);
    float* b_pack = at_bytes<float>(p.workspace, 4 * bl.mc * f32_kc_max(bl.kc));
    bl.kc = f32_balanced_kc(p.k, bl.kc);
    for (std::size_t pc = 0; pc < p.k; pc += bl.kc) {
      const std::size_t kb = std::min(bl.kc, p.k - pc);
      for (std::size_t jc = 0; jc < p.n; jc += bl.nc) {
        const std::size_t nb = std::min(bl.nc, p.n - jc);
        pack_b_f32(p, pc, kb, jc, nb, b_pack);
        // A packed panel pays off when many column panels reuse it; with up to four (convolutions with few
        // output channels) copying A costs about as much as the products, so the tiles read A in place
        // (CIFAR 2048x32x288: 0.67x OpenBLAS packed, 1.22x in place).
        const bool pack_a = nb > 4 * panel_nr;
        for (std::size_t ic = 0; ic < p.m; ic += bl.mc) {
          const std::size_t mb = std::min(bl.mc, p.m - ic);
          if (pack_a) pack_a_f32(p, ic, mb, pc, kb, a_pack);
          for (std::size_t j0 = 0; j0 < nb; j0 += panel_nr)
            for (std::size_t i0 = 0; i0 < mb; i0 += f32_mr) {
              const std::size_t h = std::min(f32_mr, mb - i0), w = std::min(panel_nr, nb - j0);
              float* c = p.c + (ic + i0) * p.ldc + jc + j0;
              if (pack_a) {
                f32_tile(kb, packed_rows{a_pack + i0 * kb}, b_pack + j0 * kb, c, p.ldc, h, w, pc == 0);
              } else {
                strided_rows rows{{}, p.a_cs};
                for (std::size_t r = 0; r < f32_mr; ++r)
                  rows.row[r] = p.a + (ic + i0 + std::min(r, h - 1)) * p.a_rs + pc * p.a_cs;
                f32_tile(kb, rows, b_pack + j0 * kb, c, p.ldc, h, w, pc == 0);
              }
            }
        }
      }
    }
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
