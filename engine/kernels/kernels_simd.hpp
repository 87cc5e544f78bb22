#pragma once
// The one xsimd template behind every SIMD kernel variant. Each kernels_<isa>.cpp instantiates it for
// its own xsimd architecture and is compiled with only that ISA's flags.
//
// GEMM kernels tile the output into MR rows x NV vectors of columns held in registers (single-vector
// tiles where NV no longer fit) and run the whole k loop per tile, in order, so every output is the same
// sequential sum as the reference. Columns that do not fill a vector are done by a scalar loop with the
// same summation order.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fewmul/kernels.hpp"
#include "kernels/gemm_blocking.hpp"
#include "kernels/xsimd_compat.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct simd_kernels {
  using fb = simd_compat::fbatch<A>;
  using ub = simd_compat::ubatch<A>;
  using ib = simd_compat::ibatch<A>;
  using fm = simd_compat::fmask<A>;
  static constexpr std::size_t lanes = fb::size;
  static constexpr std::size_t nv = 2;                          // vectors per column tile
  static constexpr std::size_t nr = nv * lanes;                 // columns per tile: 8, 16 or 32
  static constexpr std::size_t mr = lanes == 16 ? 8 : 4;        // rows per tile
  static constexpr std::uint32_t lane_mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
  static_assert(64 % nr == 0, "a column tile must lie inside one 64-bit word");

  // ---- counter-based uniforms, identical to the scalar reference --------------------------------
  static ub fmix(ub h) {
    h ^= h >> 16;
    h *= ub(0x85ebca6bu);
    h ^= h >> 13;
    h *= ub(0xc2b2ae35u);
    h ^= h >> 16;
    return h;
  }
  static ub iota() {
    alignas(64) static constexpr std::uint32_t values[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return ub::load_aligned(values);
  }
  static ub uniform23(std::uint64_t key, std::uint32_t first_index) {
    const ub index = ub(first_index) + iota();
    return fmix(fmix(index ^ ub(static_cast<std::uint32_t>(key))) + ub(static_cast<std::uint32_t>(key >> 32))) >> 9;
  }

  // ---- packing ------------------------------------------------------------------------------------
  static fm binary_bits(fb w, sample_mode mode, std::uint64_t key, std::uint32_t index) {
    if (mode == sample_mode::deterministic) return w >= fb(0.0f);
    return simd_compat::small_uint_to_float<A>(uniform23(key, index)) < (w + fb(1.0f)) * fb(4194304.0f);
  }
  static fm nonzero_bits(fb w, sample_mode mode, std::uint64_t key, std::uint32_t index) {
    const fb a = xsimd::abs(w);
    if (mode == sample_mode::deterministic) return a >= fb(0.5f);
    return simd_compat::small_uint_to_float<A>(uniform23(key, index)) < a * fb(8388608.0f);
  }

  static void pack_binary(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw, std::uint64_t* bits,
                          std::size_t ldb, sample_mode mode, std::uint64_t key) noexcept {
    const std::size_t full = cols / lanes * lanes;
    for (std::size_t r = 0; r < rows; ++r) {
      const float* src = w + r * ldw;
      std::uint64_t* dst = bits + r * ldb;
      for (std::size_t word = 0; word < words_for(cols); ++word) dst[word] = 0;
      const auto row_index = static_cast<std::uint32_t>(r * ldw);
      for (std::size_t c = 0; c < full; c += lanes) {
        const fm m = binary_bits(fb::load_unaligned(src + c), mode, key, row_index + static_cast<std::uint32_t>(c));
        dst[c / 64] |= std::uint64_t{simd_compat::bits_from_mask<A>(m)} << (c % 64);
      }
      if (full < cols) {
        alignas(64) float tail[lanes] = {};
        for (std::size_t c = full; c < cols; ++c) tail[c - full] = src[c];
        const std::uint32_t valid = (1u << (cols - full)) - 1u;
        const fm m = binary_bits(fb::load_aligned(tail), mode, key, row_index + static_cast<std::uint32_t>(full));
        dst[full / 64] |= std::uint64_t{simd_compat::bits_from_mask<A>(m) & valid} << (full % 64);
      }
    }
  }

  static void pack_ternary(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw, std::uint64_t* sign,
                           std::uint64_t* nonzero, std::size_t ldb, sample_mode mode, std::uint64_t key) noexcept {
    const std::size_t full = cols / lanes * lanes;
    auto pack_one = [&](fb v, std::uint32_t index, std::uint32_t valid, std::uint64_t* s, std::uint64_t* z,
                        std::size_t c) {
      const fm nz = nonzero_bits(v, mode, key, index);
      const std::uint32_t zb = simd_compat::bits_from_mask<A>(nz) & valid;
      const std::uint32_t sb = simd_compat::bits_from_mask<A>(v > fb(0.0f)) & zb;
      z[c / 64] |= std::uint64_t{zb} << (c % 64);
      s[c / 64] |= std::uint64_t{sb} << (c % 64);
    };
    for (std::size_t r = 0; r < rows; ++r) {
      const float* src = w + r * ldw;
      std::uint64_t* s = sign + r * ldb;
      std::uint64_t* z = nonzero + r * ldb;
      for (std::size_t word = 0; word < words_for(cols); ++word) s[word] = z[word] = 0;
      const auto row_index = static_cast<std::uint32_t>(r * ldw);
      for (std::size_t c = 0; c < full; c += lanes)
        pack_one(fb::load_unaligned(src + c), row_index + static_cast<std::uint32_t>(c), lane_mask, s, z, c);
      if (full < cols) {
        alignas(64) float tail[lanes] = {};
        for (std::size_t c = full; c < cols; ++c) tail[c - full] = src[c];
        pack_one(fb::load_aligned(tail), row_index + static_cast<std::uint32_t>(full), (1u << (cols - full)) - 1u, s,
                 z, full);
      }
    }
  }

  // ---- shared tile driver --------------------------------------------------------------------------
  // Runs tile<R, V>(row0, col0) over the output: tiles of nv vectors while they fit, then single-vector
  // tiles, with R = mr except for the last rows; scalar_column(row, col) does the columns that do not
  // fill a vector. `vector_columns` is the columns one vector covers.
  template <class Tile, class ScalarColumn>
  static void for_each_tile(std::size_t m, std::size_t n, Tile&& tile, ScalarColumn&& scalar_column,
                            std::size_t vector_columns = lanes) {
    auto rows = [&]<std::size_t V>(std::size_t j) {
      std::size_t i = 0;
      for (; i + mr <= m; i += mr) tile.template operator()<mr, V>(i, j);
      dispatch_rows(m - i, [&]<std::size_t R>() { tile.template operator()<R, V>(i, j); });
    };
    std::size_t j = 0;
    for (; j + nv * vector_columns <= n; j += nv * vector_columns) rows.template operator()<nv>(j);
    for (; j + vector_columns <= n; j += vector_columns) rows.template operator()<1>(j);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t jj = j; jj < n; ++jj) scalar_column(i, jj);
  }
  template <class F>
  static void dispatch_rows(std::size_t rows, F&& f) {
    if (rows == 0) return;
    if constexpr (mr >= 8) {
      switch (rows) {
        case 7: return f.template operator()<7>();
        case 6: return f.template operator()<6>();
        case 5: return f.template operator()<5>();
        case 4: return f.template operator()<4>();
        default: break;
      }
    }
    switch (rows) {
      case 3: return f.template operator()<3>();
      case 2: return f.template operator()<2>();
      case 1: return f.template operator()<1>();
      default: return;
    }
  }

  template <std::size_t R, std::size_t V>
  static void zero_tile(fb (&acc)[R][V]) {
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) acc[r][v] = fb(0.0f);
  }
  template <std::size_t R, std::size_t V>
  static void store_tile(const fb (&acc)[R][V], float* c, std::size_t ldc) {
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) acc[r][v].store_unaligned(c + r * ldc + v * lanes);
  }

  // ---- packed GEMMs (gemm_f32, gemm_binary) --------------------------------------------------------
  // Blocked as gemm_blocking.hpp says; both operands packed into the workspace as zero-padded panels, so
  // the register tile never sees a ragged edge: padded rows and columns compute values nobody stores.
  // Each K block continues the accumulator the previous one stored in C.
  static constexpr std::size_t f32_mr = lanes == 16 ? 12 : 6;  // rows of the register tile
  static constexpr std::size_t panel_nr = nv * lanes;          // columns of the register tile, divides 64

  template <class T>
  static T* at_bytes(void* base, std::size_t offset) {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(base) + round_up(offset, 64));
  }
  static void zero_output(std::size_t m, std::size_t n, float* c, std::size_t ldc) {
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
  }
  // Loads (or zeroes, for the first K block) an R x NV-vector tile of C, whose element (r, j) lies at
  // c[r * c_rs + j * c_cs]; rows < h and columns < w are valid.
  template <std::size_t R, std::size_t NV>
  static void load_strided_tile(fb (&acc)[R][NV], bool first, const float* c, std::size_t c_rs, std::size_t c_cs,
                                std::size_t h, std::size_t w) {
    constexpr std::size_t width = NV * lanes;
    if (first || (c_cs == 1 && h == R && w == width)) {
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < NV; ++v) acc[r][v] = first ? fb(0.0f) : fb::load_unaligned(c + r * c_rs + v * lanes);
      return;
    }
    if constexpr (R == 4) {
      if (c_rs == 1 && h == R && w == width) {  // transposed C: four consecutive floats per column
        for (std::size_t v = 0; v < NV; ++v) {
          fb rows[4];
          simd_compat::load_columns4<A>(rows, c + v * lanes * c_cs, c_cs);
          for (std::size_t r = 0; r < 4; ++r) acc[r][v] = rows[r];
        }
        return;
      }
    }
    alignas(64) float tile[R * width] = {};
    for (std::size_t j = 0; j < w; ++j)
      for (std::size_t r = 0; r < h; ++r) tile[r * width + j] = c[r * c_rs + j * c_cs];
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < NV; ++v) acc[r][v] = fb::load_aligned(tile + r * width + v * lanes);
  }
  template <std::size_t R, std::size_t NV>
  static void store_strided_tile(const fb (&acc)[R][NV], float* c, std::size_t c_rs, std::size_t c_cs, std::size_t h,
                                 std::size_t w) {
    constexpr std::size_t width = NV * lanes;
    if (c_cs == 1 && h == R && w == width) {
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < NV; ++v) acc[r][v].store_unaligned(c + r * c_rs + v * lanes);
      return;
    }
    if constexpr (R == 4) {
      if (c_rs == 1 && h == R && w == width) {
        for (std::size_t v = 0; v < NV; ++v)
          simd_compat::store_columns4<A>(acc[0][v], acc[1][v], acc[2][v], acc[3][v], c + v * lanes * c_cs, c_cs);
        return;
      }
    }
    alignas(64) float tile[R * width];
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < NV; ++v) acc[r][v].store_aligned(tile + r * width + v * lanes);
    for (std::size_t j = 0; j < w; ++j)
      for (std::size_t r = 0; r < h; ++r) c[r * c_rs + j * c_cs] = tile[r * width + j];
  }
  // The same for a row-major C (row stride ldc).
  template <std::size_t R, std::size_t NV>
  static void load_panel_tile(fb (&acc)[R][NV], bool first, const float* c, std::size_t ldc, std::size_t h,
                              std::size_t w) {
    load_strided_tile(acc, first, c, ldc, 1, h, w);
  }
  template <std::size_t R, std::size_t NV>
  static void store_panel_tile(const fb (&acc)[R][NV], float* c, std::size_t ldc, std::size_t h, std::size_t w) {
    store_strided_tile(acc, c, ldc, 1, h, w);
  }

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
  static void pack_b_f32(const gemm_f32_params& p, std::size_t pc, std::size_t kb, std::size_t jc, std::size_t nb,
                         float* out) {
    for (std::size_t j0 = 0; j0 < nb; j0 += panel_nr) {
      float* panel = out + j0 * kb;
      const std::size_t w = std::min(panel_nr, nb - j0);
      for (std::size_t q = 0; q < kb; ++q) {
        const float* src = p.b + (pc + q) * p.ldb + jc + j0;
        float* dst = panel + q * panel_nr;
        if (w == panel_nr) {
          for (std::size_t v = 0; v < nv; ++v) fb::load_unaligned(src + v * lanes).store_aligned(dst + v * lanes);
        } else {
          for (std::size_t j = 0; j < panel_nr; ++j) dst[j] = j < w ? src[j] : 0.0f;
        }
      }
    }
  }
  // acc[r][v] = fma(A(r, q), B(q, v), acc[r][v]) for q in order: the reference's sum.
  static void f32_tile(std::size_t kb, const float* ap, const float* bp, float* c, std::size_t ldc, std::size_t h,
                       std::size_t w, bool first) {
    fb acc[f32_mr][nv];
    load_panel_tile(acc, first, c, ldc, h, w);
    for (std::size_t q = 0; q < kb; ++q) {
      fb bv[nv];
      for (std::size_t v = 0; v < nv; ++v) bv[v] = fb::load_aligned(bp + q * panel_nr + v * lanes);
      for (std::size_t r = 0; r < f32_mr; ++r) {
        const fb av(ap[q * f32_mr + r]);
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

  static void gemm_f32(const gemm_f32_params& p) noexcept {
    if (p.m == 0 || p.n == 0) return;
    if (p.k == 0) return zero_output(p.m, p.n, p.c, p.ldc);
    if (p.m < 4) return gemm_f32_few_rows(p);
    const gemm_blocks bl = f32_blocks(p.caches, f32_mr, panel_nr);
    float* a_pack = at_bytes<float>(p.workspace, 0);
    float* b_pack = at_bytes<float>(p.workspace, 4 * bl.mc * bl.kc);
    for (std::size_t pc = 0; pc < p.k; pc += bl.kc) {
      const std::size_t kb = std::min(bl.kc, p.k - pc);
      for (std::size_t jc = 0; jc < p.n; jc += bl.nc) {
        const std::size_t nb = std::min(bl.nc, p.n - jc);
        pack_b_f32(p, pc, kb, jc, nb, b_pack);
        for (std::size_t ic = 0; ic < p.m; ic += bl.mc) {
          const std::size_t mb = std::min(bl.mc, p.m - ic);
          pack_a_f32(p, ic, mb, pc, kb, a_pack);
          for (std::size_t j0 = 0; j0 < nb; j0 += panel_nr)
            for (std::size_t i0 = 0; i0 < mb; i0 += f32_mr)
              f32_tile(kb, a_pack + i0 * kb, b_pack + j0 * kb, p.c + (ic + i0) * p.ldc + jc + j0, p.ldc,
                       std::min(f32_mr, mb - i0), std::min(panel_nr, nb - j0), pc == 0);
        }
      }
    }
  }

  // Binary and ternary by grouped lookup (see "Summation order" in fewmul/kernels.hpp). A group covers
  // `Group` consecutive k of B's bit planes, starting at a multiple of Group (K blocks start at multiples
  // of 12). B becomes per column the index of its group's weights, in panels [cols/nr][groups][nr] of
  // int32; each row of A becomes per group a table of all signed sums, which one permute reads for a
  // whole vector of columns.
  //   binary, group 4, 16 entries: index bit u = weight bit of k = 4g + u; T[p] = (s0 + s1) + (s2 + s3),
  //     s_u = (bit u of p) ? a_u : -a_u.
  //   ternary, group 3, 32 entries (27 used): index = d0 + 3 d1 + 9 d2 with d_u = 0, 1, 2 for a weight
  //     0, +1, -1 at k = 3g + u; T[p] = (v0 + v1) + v2, v_u = 0, a_u, -a_u by the digit d_u of p.
  // Bits past K read as 0 and a_u past K as 0.
  // Register tile of the lookups: on AVX-512 6 rows x 4 vectors (64 columns: one word of bits), so each
  // table loaded from L1 serves four permutes; elsewhere 4 rows x 2 vectors.
  static constexpr std::size_t lookup_mr = lanes == 16 ? 6 : 4;
  static constexpr std::size_t lookup_nv = lanes == 16 ? 4 : 2;
  static constexpr std::size_t lookup_nr = lookup_nv * lanes;
  static_assert(64 % lookup_nr == 0, "a lookup panel's bits must lie inside one 64-bit word");
  struct lookup_operands {
    std::size_t m, n, k;
    const float* a;
    std::size_t a_rs, a_cs;
    const std::uint64_t* sign;     // binary: the weight bits
    const std::uint64_t* nonzero;  // ternary only
    std::size_t ldb;
    float* c;
    std::size_t ldc;
    cache_sizes caches;
    void* workspace;
  };
  template <std::size_t Group>
  static constexpr std::size_t table_entries = Group == 4 ? 16 : 32;

  static std::uint64_t tile_bits(const std::uint64_t* row, std::size_t j0) {
    return row[j0 / 64] >> (j0 % 64);
  }
  // Lanes of `word` (bits of `lanes` columns) as 0/1 integers.
  static ub lane_ones(std::uint64_t word) {
    alignas(64) static constexpr std::uint32_t lane_bits[16] = {1u << 0,  1u << 1,  1u << 2,  1u << 3,
                                                                1u << 4,  1u << 5,  1u << 6,  1u << 7,
                                                                1u << 8,  1u << 9,  1u << 10, 1u << 11,
                                                                1u << 12, 1u << 13, 1u << 14, 1u << 15};
    const ub bit = ub::load_aligned(lane_bits);
    return xsimd::select((ub(static_cast<std::uint32_t>(word) & lane_mask) & bit) != ub(0u), ub(1u), ub(0u));
  }
  template <std::size_t Group>
  static ub group_index(const lookup_operands& p, std::size_t q0, std::size_t j0) {
    ub idx(0u);
    for (std::size_t u = 0; u < Group; ++u) {
      const std::size_t q = q0 + u;
      if (q >= p.k) break;
      if constexpr (Group == 4) {
        idx = idx + (lane_ones(tile_bits(p.sign + q * p.ldb, j0)) << u);
      } else {
        const ub nz = lane_ones(tile_bits(p.nonzero + q * p.ldb, j0));
        const ub digit = nz + (nz ^ lane_ones(tile_bits(p.sign + q * p.ldb, j0)));  // sign ⊆ nonzero
        const ub weighted = u == 0 ? digit : u == 1 ? digit + (digit << 1) : digit + (digit << 3);
        idx = idx + weighted;
      }
    }
    return idx;
  }
  template <std::size_t Group>
  static void pack_indices(const lookup_operands& p, std::size_t pc, std::size_t kb, std::size_t jc, std::size_t nb,
                           std::int32_t* out) {
    const std::size_t groups = (kb + Group - 1) / Group;
    for (std::size_t j0 = 0; j0 < nb; j0 += lookup_nr) {
      std::int32_t* panel = out + j0 * groups;
      for (std::size_t g = 0; g < groups; ++g)
        for (std::size_t v = 0; v < lookup_nv; ++v)
          xsimd::bitwise_cast<ib>(group_index<Group>(p, pc + Group * g, jc + j0 + v * lanes))
              .store_aligned(panel + g * lookup_nr + v * lanes);
    }
  }
  // Lane masks of the table entries: negate[u][p] has the sign bit where bit u of p is 0 (binary: -a_u);
  // ternary_negate[u][p] where digit u of p is 2, ternary_keep[u][p] is all ones where it is not 0.
  struct table_masks {
    alignas(64) std::uint32_t negate[4][16];
    alignas(64) std::uint32_t ternary_negate[3][32];
    alignas(64) std::uint32_t ternary_keep[3][32];
  };
  static constexpr table_masks make_table_masks() {
    table_masks t{};
    for (std::size_t p = 0; p < 16; ++p)
      for (std::size_t u = 0; u < 4; ++u) t.negate[u][p] = (p >> u) & 1u ? 0u : 0x80000000u;
    for (std::size_t p = 0; p < 32; ++p)
      for (std::size_t u = 0, d = p; u < 3; ++u, d /= 3) {
        const std::size_t digit = p < 27 ? d % 3 : 0;
        t.ternary_negate[u][p] = digit == 2 ? 0x80000000u : 0u;
        t.ternary_keep[u][p] = digit != 0 ? 0xffffffffu : 0u;
      }
    return t;
  }
  template <std::size_t Group, std::size_t MR>
  static void build_tables(const lookup_operands& p, std::size_t i0, std::size_t h, std::size_t pc, std::size_t kb,
                           float* out) {
    alignas(64) static constexpr table_masks masks = make_table_masks();
    constexpr std::size_t entries = table_entries<Group>;
    const std::size_t groups = (kb + Group - 1) / Group;
    for (std::size_t g = 0; g < groups; ++g)
      for (std::size_t r = 0; r < MR; ++r) {
        float a_u[Group] = {};
        if (r < h)
          for (std::size_t u = 0; u < Group && Group * g + u < kb; ++u)
            a_u[u] = p.a[(i0 + r) * p.a_rs + (pc + Group * g + u) * p.a_cs];
        float* table = out + (g * MR + r) * entries;
        for (std::size_t q = 0; q < entries; q += lanes) {
          if constexpr (Group == 4) {
            fb s[4];
            for (std::size_t u = 0; u < 4; ++u)
              s[u] = simd_compat::as_float<A>(simd_compat::as_bits<A>(fb(a_u[u])) ^ ub::load_aligned(masks.negate[u] + q));
            ((s[0] + s[1]) + (s[2] + s[3])).store_aligned(table + q);
          } else {
            fb v[3];
            for (std::size_t u = 0; u < 3; ++u)
              v[u] = simd_compat::as_float<A>((simd_compat::as_bits<A>(fb(a_u[u])) ^
                                               ub::load_aligned(masks.ternary_negate[u] + q)) &
                                              ub::load_aligned(masks.ternary_keep[u] + q));
            ((v[0] + v[1]) + v[2]).store_aligned(table + q);
          }
        }
      }
  }
  template <std::size_t Group, std::size_t MR>
  static void lookup_tile(std::size_t groups, const float* tables, const std::int32_t* ip, float* c, std::size_t ldc,
                          std::size_t h, std::size_t w, bool first) {
    constexpr std::size_t entries = table_entries<Group>;
    fb acc[MR][lookup_nv];
    load_panel_tile(acc, first, c, ldc, h, w);
    for (std::size_t g = 0; g < groups; ++g) {
      ib idx[lookup_nv];
      for (std::size_t v = 0; v < lookup_nv; ++v) idx[v] = ib::load_aligned(ip + g * lookup_nr + v * lanes);
      for (std::size_t r = 0; r < MR; ++r) {
        const float* t = tables + (g * MR + r) * entries;
        if constexpr (entries == 16) {
          const auto table = simd_compat::load_table16<A>(t);
          for (std::size_t v = 0; v < lookup_nv; ++v) acc[r][v] = acc[r][v] + simd_compat::lookup16<A>(table, idx[v]);
        } else {
          const auto table = simd_compat::load_table32<A>(t);
          for (std::size_t v = 0; v < lookup_nv; ++v) acc[r][v] = acc[r][v] + simd_compat::lookup32<A>(table, idx[v]);
        }
      }
    }
    store_panel_tile(acc, c, ldc, h, w);
  }
  // One group's signed sum for `lanes` columns starting at j0, formed in place with selects: the table
  // entry those columns' indices would pick, computed the same way.
  template <std::size_t Group>
  static fb group_sum(const lookup_operands& p, std::size_t i, std::size_t q0, std::size_t j0) {
    fb s[Group];
    for (std::size_t u = 0; u < Group; ++u) {
      const std::size_t q = q0 + u;
      const fb av(q < p.k ? p.a[i * p.a_rs + q * p.a_cs] : 0.0f);
      const auto sign = q < p.k ? static_cast<std::uint32_t>(tile_bits(p.sign + q * p.ldb, j0)) & lane_mask : 0u;
      if constexpr (Group == 4) {
        s[u] = xsimd::select(simd_compat::mask_from_bits<A>(sign), av, -av);
      } else {
        const auto nz = q < p.k ? static_cast<std::uint32_t>(tile_bits(p.nonzero + q * p.ldb, j0)) & lane_mask : 0u;
        s[u] = xsimd::select(simd_compat::mask_from_bits<A>(nz),
                             xsimd::select(simd_compat::mask_from_bits<A>(sign), av, -av), fb(0.0f));
      }
    }
    if constexpr (Group == 4) return (s[0] + s[1]) + (s[2] + s[3]);
    return (s[0] + s[1]) + s[2];
  }
  // Few rows (batch-1 inference): packing would cost more than it saves.
  template <std::size_t Group>
  static void lookup_gemm_few_rows(const lookup_operands& p) {
    for (std::size_t i = 0; i < p.m; ++i)
      for (std::size_t j0 = 0; j0 < p.n; j0 += lanes) {
        fb acc(0.0f);
        for (std::size_t q0 = 0; q0 < p.k; q0 += Group) acc = acc + group_sum<Group>(p, i, q0, j0);
        const std::size_t w = std::min(lanes, p.n - j0);
        if (w == lanes) {
          acc.store_unaligned(p.c + i * p.ldc + j0);
        } else {
          alignas(64) float out[lanes];
          acc.store_aligned(out);
          for (std::size_t j = 0; j < w; ++j) p.c[i * p.ldc + j0 + j] = out[j];
        }
      }
  }
  template <std::size_t Group, std::size_t MR>
  static void lookup_gemm(const lookup_operands& p) {
    if (p.m == 0 || p.n == 0) return;
    if (p.k == 0) return zero_output(p.m, p.n, p.c, p.ldc);
    if (p.m < 4) return lookup_gemm_few_rows<Group>(p);
    const gemm_blocks bl = lookup_blocks(p.caches, Group, table_entries<Group>, MR, lookup_nr);
    auto* indices = at_bytes<std::int32_t>(p.workspace, 0);
    float* tables = at_bytes<float>(p.workspace, 4 * (bl.kc / Group * bl.nc));
    for (std::size_t pc = 0; pc < p.k; pc += bl.kc) {
      const std::size_t kb = std::min(bl.kc, p.k - pc), groups = (kb + Group - 1) / Group;
      for (std::size_t jc = 0; jc < p.n; jc += bl.nc) {
        const std::size_t nb = std::min(bl.nc, p.n - jc);
        pack_indices<Group>(p, pc, kb, jc, nb, indices);
        for (std::size_t i0 = 0; i0 < p.m; i0 += MR) {
          const std::size_t h = std::min(MR, p.m - i0);
          build_tables<Group, MR>(p, i0, h, pc, kb, tables);
          for (std::size_t j0 = 0; j0 < nb; j0 += lookup_nr)
            lookup_tile<Group, MR>(groups, tables, indices + j0 * groups, p.c + i0 * p.ldc + jc + j0, p.ldc, h,
                                   std::min(lookup_nr, nb - j0), pc == 0);
        }
      }
    }
  }

  static void gemm_binary(const gemm_binary_params& p) noexcept {
    lookup_gemm<4, lookup_mr>({p.m, p.n, p.k, p.a, p.a_rs, p.a_cs, p.bits, nullptr, p.ldb, p.c, p.ldc, p.caches,
                            p.workspace});
  }
  static void gemm_ternary(const gemm_ternary_params& p) noexcept {
    lookup_gemm<3, lookup_mr>({p.m, p.n, p.k, p.a, p.a_rs, p.a_cs, p.sign, p.nonzero, p.ldb, p.c, p.ldc, p.caches,
                            p.workspace});
  }

  static std::size_t workspace_bytes(const cache_sizes& caches) noexcept {
    return std::max({f32_workspace_bytes(caches, f32_mr, panel_nr),
                     lookup_workspace_bytes(caches, 4, table_entries<4>, lookup_mr, lookup_nr),
                     lookup_workspace_bytes(caches, 3, table_entries<3>, lookup_mr, lookup_nr),
                     shift_workspace_bytes(caches, shift_mr, shift_nr)});
  }

  // ---- shift GEMM (quantized-backprop weight gradient) --------------------------------------------
  // A product b * (±2^e) is the integer add  bits(b) + (e << 23) + (s << 31): the first term moves the
  // exponent field by e (no carry out while the result stays normal, which the caller's range on B
  // guarantees), the second flips the sign bit (adding 2^31 modulo 2^32 is an XOR of bit 31).

  // Codes are the broadcast operand, so a zero code (ReLU zeros: about half of a layer's inputs) skips a
  // whole row of the register tile: each row of A becomes the list of its nonzero codes in k order, as
  // (offset of B's row in the packed panel, addend (e << 23) + (s << 31)). The rows of a panel step
  // through their lists together; a shorter list is padded with entries pointing at the panel's extra
  // row of zeros, which B's own zero test then skips like any zero of B.
  static constexpr std::size_t shift_mr = 4;
  // Two vectors of columns: the B panel of a whole minibatch (200 rows x 32 floats = 25 KiB on AVX-512)
  // stays in L1 in one K block; four vectors (fewer entry loads per product) measured 40% slower on the
  // weight gradient, whose K block then split and whose transposed C tile was stored twice.
  static constexpr std::size_t shift_nv = 2;
  static constexpr std::size_t shift_nr = shift_nv * lanes;
  struct shift_entry {
    std::uint32_t offset;  // floats into the B panel
    std::uint32_t addend;
  };
  static std::uint32_t shift_addend(int code) {
    const int magnitude = code < 0 ? -code : code;
    return (static_cast<std::uint32_t>(magnitude - pow2_code_bias) << 23) + (code < 0 ? 0x80000000u : 0u);
  }
  // Lists of rows i0 .. i0 + h of the K block [pc, pc + kb), interleaved [step][shift_mr]; returns the steps.
  static std::size_t build_shift_lists(const gemm_shift_params& p, std::size_t i0, std::size_t h, std::size_t pc,
                                       std::size_t kb, shift_entry* list) {
    std::size_t counts[shift_mr] = {}, steps = 0;
    for (std::size_t r = 0; r < h; ++r) {
      const std::int8_t* row = p.q + (i0 + r) * p.q_rs + pc * p.q_cs;
      std::size_t count = 0;
      for (std::size_t q = 0; q < kb; ++q) {  // branch-free: zeros are random, so a branch would mispredict
        const int code = row[q * p.q_cs];
        list[count * shift_mr + r] = {static_cast<std::uint32_t>(q * shift_nr), shift_addend(code)};
        count += code != 0 ? 1 : 0;
      }
      counts[r] = count;
      steps = std::max(steps, count);
    }
    const shift_entry padding{static_cast<std::uint32_t>(kb * shift_nr), 0u};
    for (std::size_t r = 0; r < shift_mr; ++r)
      for (std::size_t s = counts[r]; s < steps; ++s) list[s * shift_mr + r] = padding;
    return steps;
  }
  // B rows pc .. pc + kb, columns j0 .. j0 + w, into a panel [kb + 1][nr] whose last row is zeros. Returns
  // whether B's rows pc .. pc + kb hold a zero in those columns, i.e. whether the tile must test B.
  static bool pack_b_shift(const gemm_shift_params& p, std::size_t pc, std::size_t kb, std::size_t j0, std::size_t w,
                           float* panel) {
    auto zero = fb(1.0f) == fb(0.0f);
    bool scalar_zero = false;
    for (std::size_t q = 0; q < kb; ++q) {
      const float* src = p.b + (pc + q) * p.ldb + j0;
      float* dst = panel + q * shift_nr;
      if (w == shift_nr) {
        for (std::size_t v = 0; v < shift_nv; ++v) {
          const fb b = fb::load_unaligned(src + v * lanes);
          b.store_aligned(dst + v * lanes);
          zero = zero | (b == fb(0.0f));
        }
      } else {  // padding columns are zeros, but their sums are never stored: only real columns count
        for (std::size_t j = 0; j < shift_nr; ++j) dst[j] = j < w ? src[j] : 0.0f;
        for (std::size_t j = 0; j < w; ++j) scalar_zero |= src[j] == 0.0f;
      }
    }
    for (std::size_t j = 0; j < shift_nr; ++j) panel[kb * shift_nr + j] = 0.0f;
    return scalar_zero || xsimd::any(zero);
  }

  // TestB: B holds zeros, so each product is added only where B is nonzero. Without zeros in B (the usual
  // gradient) only the padding entries meet a zero: their addend 0 leaves it +0, and adding +0 changes no
  // accumulator (which is never -0: it starts at +0 and takes nonzero terms), so no test is needed.
  template <bool TestB>
  static void shift_tile(std::size_t steps, const shift_entry* list, const float* panel, float* c, std::size_t c_rs,
                         std::size_t c_cs, std::size_t h, std::size_t w, bool first) {
    fb acc[shift_mr][shift_nv];
    load_strided_tile(acc, first, c, c_rs, c_cs, h, w);
    for (std::size_t s = 0; s < steps; ++s)
      for (std::size_t r = 0; r < shift_mr; ++r) {
        const shift_entry e = list[s * shift_mr + r];
        const ub addend(e.addend);
        const float* row = panel + e.offset;
        for (std::size_t v = 0; v < shift_nv; ++v) {
          const fb b = fb::load_aligned(row + v * lanes);
          const fb product = simd_compat::as_float<A>(simd_compat::as_bits<A>(b) + addend);
          if constexpr (TestB)
            acc[r][v] = xsimd::select(b != fb(0.0f), acc[r][v] + product, acc[r][v]);
          else
            acc[r][v] = acc[r][v] + product;
        }
      }
    store_strided_tile(acc, c, c_rs, c_cs, h, w);
  }

  static void gemm_shift(const gemm_shift_params& p) noexcept {
    if (p.m == 0 || p.n == 0) return;
    if (p.k == 0) {
      for (std::size_t i = 0; i < p.m; ++i)
        for (std::size_t j = 0; j < p.n; ++j) p.c[i * p.c_rs + j * p.c_cs] = 0.0f;
      return;
    }
    const gemm_blocks bl = shift_blocks(p.caches, shift_mr, shift_nr);
    auto* lists = at_bytes<shift_entry>(p.workspace, 0);
    auto* steps = at_bytes<std::uint32_t>(p.workspace, 8 * bl.mc * bl.kc);
    float* panel = at_bytes<float>(p.workspace, 8 * bl.mc * bl.kc + 4 * bl.mc / shift_mr + 64);
    for (std::size_t pc = 0; pc < p.k; pc += bl.kc) {
      const std::size_t kb = std::min(bl.kc, p.k - pc);
      for (std::size_t ic = 0; ic < p.m; ic += bl.mc) {
        const std::size_t mb = std::min(bl.mc, p.m - ic);
        for (std::size_t i0 = 0; i0 < mb; i0 += shift_mr)
          steps[i0 / shift_mr] = static_cast<std::uint32_t>(
              build_shift_lists(p, ic + i0, std::min(shift_mr, mb - i0), pc, kb, lists + i0 * kb));
        for (std::size_t j0 = 0; j0 < p.n; j0 += shift_nr) {
          const std::size_t w = std::min(shift_nr, p.n - j0);
          const bool b_has_zeros = pack_b_shift(p, pc, kb, j0, w, panel);
          for (std::size_t i0 = 0; i0 < mb; i0 += shift_mr) {
            const auto tile = b_has_zeros ? &shift_tile<true> : &shift_tile<false>;
            tile(steps[i0 / shift_mr], lists + i0 * kb, panel, p.c + (ic + i0) * p.c_rs + j0 * p.c_cs, p.c_rs, p.c_cs,
                 std::min(shift_mr, mb - i0), w, pc == 0);
          }
        }
      }
    }
  }

  // ---- stochastic power-of-two quantizer ----------------------------------------------------------
  static void quantize_pow2(const float* x, std::size_t n, std::int8_t* codes, int kmin, int kmax, std::uint64_t key,
                            std::uint32_t index0) noexcept {
    const float below_scale = std::ldexp(1.0f, 23 - kmin);
    std::size_t i = 0;
    auto block = [&](fb v, std::uint32_t index, std::int8_t* out, std::size_t count) {
      const ub bits = simd_compat::as_bits<A>(v) & ub(0x7fffffffu);
      const ub u = uniform23(key, index);
      const ib exponent = xsimd::bitwise_cast<ib>(bits >> 23) - ib(127);
      const ib mantissa = xsimd::bitwise_cast<ib>(bits & ub(0x7fffffu));
      const ib ui = xsimd::bitwise_cast<ib>(u);
      ib k = exponent + xsimd::select(ui < mantissa, ib(1), ib(0));
      k = xsimd::select(exponent >= ib(kmax), ib(kmax), k);
      const auto below = exponent < ib(kmin);
      const fb threshold = xsimd::abs(v) * fb(below_scale);
      const fm keep_below = simd_compat::small_uint_to_float<A>(u) < threshold;
      const auto below_zero = xsimd::bitwise_cast<ib>(xsimd::select(keep_below, fb(0.0f), fb(1.0f))) != ib(0);
      k = xsimd::select(below, ib(kmin), k);
      const auto zero = (xsimd::bitwise_cast<ib>(bits) == ib(0)) | (below & below_zero);
      ib code = k + ib(pow2_code_bias);
      code = xsimd::select(xsimd::bitwise_cast<ib>(simd_compat::as_bits<A>(v)) < ib(0), -code, code);
      code = xsimd::select(zero, ib(0), code);
      alignas(64) std::int32_t lanes_out[lanes];
      code.store_aligned(lanes_out);
      for (std::size_t l = 0; l < count; ++l) out[l] = static_cast<std::int8_t>(lanes_out[l]);
    };
    for (; i + lanes <= n; i += lanes)
      block(fb::load_unaligned(x + i), index0 + static_cast<std::uint32_t>(i), codes + i, lanes);
    if (i < n) {
      alignas(64) float tail[lanes] = {};
      for (std::size_t t = i; t < n; ++t) tail[t - i] = x[t];
      block(fb::load_aligned(tail), index0 + static_cast<std::uint32_t>(i), codes + i, n - i);
    }
  }

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
          for (std::size_t v = 0; v < V; ++v) different[r][v] = different[r][v] + simd_compat::popcount_lanes<A>(av ^ b[v]);
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

  static kernel_table table(fewmul::isa which) {
    return kernel_table{which,      &pack_binary,   &pack_ternary, &gemm_f32,  &gemm_binary,    &gemm_ternary,
                        &gemm_shift, &quantize_pow2, &gemm_xnor,    panel_nr, &workspace_bytes};
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
