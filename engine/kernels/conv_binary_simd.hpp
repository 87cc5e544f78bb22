#pragma once
// conv_binary: the forward of a binary-weight convolution as an implicit GEMM (contract in fewmul/kernels.hpp).
//
// gemm_binary on the im2col matrix builds, for every row (output position) and group of four consecutive k,
// the 16-entry table of signed sums T[p] = (s0 + s1) + (s2 + s3). With k = (tap, channel) and channels % 4 == 0
// a group never straddles two taps, so its table is a function of the input pixel under the tap and of the
// channel group alone: kernel^2 output positions (9 for 3x3) read the same table. Here each pixel's tables
// are built once, for a band of input rows, and the register tile reads, for each tap, the tables of the
// pixels under it (a zero pixel's tables in the padding, built from zeros as the im2col zeros would be).
// The lookups and their order (taps, then channel groups: k order) are gemm_binary's, so the results are
// the same bits; only the table building shrinks, which dominates when the layer has few output channels.
#include "kernels/gemm_lookup_simd.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct conv_binary_simd {
  using lookup = gemm_lookup_simd<A>;
  using fb = typename lookup::fb;
  using ib = typename lookup::ib;
  static constexpr std::size_t lanes = lookup::lanes;

  struct geometry {
    std::size_t ho, wo, pad, taps, groups, k_groups;
  };
  static geometry geometry_of(const conv_binary_params& p) {
    geometry g{};
    g.ho = p.same_padding ? p.height : p.height + 1 - p.kernel;
    g.wo = p.same_padding ? p.width : p.width + 1 - p.kernel;
    g.pad = p.same_padding ? (p.kernel - 1) / 2 : 0;
    g.taps = p.kernel * p.kernel;
    g.groups = p.channels / 4;
    g.k_groups = g.taps * g.groups;
    return g;
  }

  // `tables[t * MR + r]`: the tables of the pixel under tap t for row r of the tile.
  template <std::size_t MR, std::size_t NV>
  static void conv_tile(const float* const* tables, std::size_t taps, std::size_t groups, const std::int32_t* ip,
                        float* c, std::size_t ldc, std::size_t h, std::size_t w, bool first) {
    fb acc[MR][NV];
    lookup::load_panel_tile(acc, first, c, ldc, h, w);
    for (std::size_t t = 0; t < taps; ++t) {
      const float* const* row_tables = tables + t * MR;
      const std::int32_t* tap_ip = ip + t * groups * NV * lanes;
      for (std::size_t g = 0; g < groups; ++g) {
        ib idx[NV];
        for (std::size_t v = 0; v < NV; ++v) idx[v] = ib::load_aligned(tap_ip + (g * NV + v) * lanes);
        for (std::size_t r = 0; r < MR; ++r) {
          const auto table = simd_compat::load_table16<A>(row_tables[r] + g * 16);
          for (std::size_t v = 0; v < NV; ++v)
            acc[r][v] = lookup::accumulate_lookup(acc[r][v], simd_compat::lookup16<A>(table, idx[v]), v);
        }
      }
    }
    lookup::store_panel_tile(acc, c, ldc, h, w);
  }

  template <std::size_t MR, std::size_t NV>
  static void run(const conv_binary_params& p) {
    constexpr std::size_t nr = NV * lanes;
    const geometry g = geometry_of(p);
    const std::size_t row_floats = 16 * p.width * g.groups;
    float* zero_tables = at_bytes<float>(p.workspace, 0);
    auto* indices = at_bytes<std::int32_t>(zero_tables, 4 * 16 * g.groups);
    float* band_tables = at_bytes<float>(indices, 4 * g.k_groups * nr);
    const std::size_t fixed = static_cast<std::size_t>(reinterpret_cast<unsigned char*>(band_tables) -
                                                       static_cast<unsigned char*>(p.workspace));
    const std::size_t band_input_rows = (conv_binary_workspace_bytes(p.caches) - fixed) / (4 * row_floats);
    const std::size_t band_rows = band_input_rows + 1 - p.kernel;  // output rows per band (conv_binary_fits: >= 1)
    const std::size_t taps_per_block = std::clamp<std::size_t>(p.caches.l1 / 2 / (4 * nr * g.groups), 1, g.taps);
    lookup::build_binary_tables(nullptr, 0, g.groups, zero_tables, 16);
    // pack_indices reads the weight bits through gemm_lookup_simd's operand struct.
    const typename lookup::lookup_operands ops{
        0, p.n, p.kernel * p.kernel * p.channels, nullptr, 0, 0, p.sign, nullptr, p.ldb, nullptr, 0, p.caches, nullptr};
    const float* tile_tables[MR * 49];  // taps <= 49: conv_binary_fits refuses kernels over 7
    const std::size_t positions = g.ho * g.wo, image_floats = p.height * p.width * p.channels;
    std::size_t position = p.p0;
    const std::size_t end = p.p0 + p.rows;
    while (position < end) {
      // A band: output rows oy0 .. oy1 of one image, from `position` on.
      const std::size_t image = position / positions, oy0 = position % positions / g.wo;
      const std::size_t oy1 = std::min(g.ho, oy0 + band_rows);
      const std::size_t band_end = std::min(end, image * positions + oy1 * g.wo);
      // Input rows iy0 .. iy1 under those output rows (clipped to the map).
      const std::size_t iy0 = oy0 > g.pad ? oy0 - g.pad : 0;
      const std::size_t iy1 = std::min(p.height, oy1 - 1 + p.kernel - g.pad);
      const float* x = p.x + image * image_floats;
      for (std::size_t iy = iy0; iy < iy1; ++iy)  // a row's pixels are contiguous, and so are their tables
        lookup::build_binary_tables(x + iy * p.width * p.channels, p.width * p.channels, p.width * g.groups,
                                    band_tables + (iy - iy0) * row_floats, 16);
      for (std::size_t j0 = 0; j0 < p.n; j0 += nr) {
        const std::size_t w = std::min(nr, p.n - j0);
        lookup::template pack_indices<4, NV>(ops, 0, 4 * g.k_groups, j0, w, indices);
        // Taps in blocks whose weight indices stay in L1 (the sums continue through C between blocks, which
        // changes no bit); each tile then reads its pixels' tables once per tap.
        for (std::size_t t0 = 0; t0 < g.taps; t0 += taps_per_block) {
          const std::size_t t1 = std::min(g.taps, t0 + taps_per_block);
          for (std::size_t i0 = position; i0 < band_end; i0 += MR) {
            const std::size_t h = std::min(MR, band_end - i0);
            // The tile's rows are consecutive positions of one image: one division, then steps along the row.
            const std::size_t q0 = i0 - image * positions;
            std::size_t oy = q0 / g.wo, ox = q0 % g.wo;
            for (std::size_t r = 0; r < MR; ++r) {  // rows past h repeat the last (their sums are not stored)
              for (std::size_t t = t0; t < t1; ++t) {
                const std::size_t iy = oy + t / p.kernel, ix = ox + t % p.kernel;  // + pad
                const bool inside = iy >= g.pad && ix >= g.pad && iy - g.pad < p.height && ix - g.pad < p.width;
                tile_tables[(t - t0) * MR + r] =
                    inside ? band_tables + (iy - g.pad - iy0) * row_floats + (ix - g.pad) * 16 * g.groups : zero_tables;
              }
              if (r + 1 < h && ++ox == g.wo) {
                ox = 0;
                ++oy;
              }
            }
            conv_tile<MR, NV>(tile_tables, t1 - t0, g.groups, indices + t0 * g.groups * nr,
                              p.c + (i0 - p.p0) * p.ldc + j0, p.ldc, h, w, t0 == 0);
          }
        }
      }
      position = band_end;
    }
  }

  static void conv_binary(const conv_binary_params& p) noexcept {
    if (p.rows == 0 || p.n == 0) return;
    if (p.n <= lookup::narrow_nv * lanes)
      run<lookup::narrow_mr, lookup::narrow_nv>(p);
    else
      run<lookup::lookup_mr, lookup::lookup_nv>(p);
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
