#pragma once
// Shared pieces of the xsimd kernel template (see kernels_simd.hpp): per-ISA vector types and tile
// constants, counter-based uniforms, the tile driver, strided tile loads and stores. Each kernel stem's
// class template <stem>_simd<A> (in <stem>_simd.hpp) derives from simd_common<A>.
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
struct simd_common {
  using fb = simd_compat::fbatch<A>;
  using ub = simd_compat::ubatch<A>;
  using ib = simd_compat::ibatch<A>;
  using fm = simd_compat::fmask<A>;
  static constexpr std::size_t lanes = fb::size;
  static constexpr std::size_t nv = 2;                    // vectors per column tile
  static constexpr std::size_t nr = nv * lanes;           // columns per tile: 8, 16 or 32
  static constexpr std::size_t mr = lanes == 16 ? 8 : 4;  // rows per tile
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
  // ---- lookup accumulation ----------------------------------------------------------------------
  // acc + x for a 16-entry lookup tile's column vector v. On AVX-512 (one vpermps per lookup) odd vectors' sums
  // go to the FMA unit as x * 1 + acc (simd_compat::add_on_fma_unit, the same bits): the permutes and adds
  // share pipes on AMD Zen 5, about 1.4 permute + add pairs per cycle where either alone issues 2, while the
  // FMA pipes idle; with half the adds there, 1.65 pairs per cycle (a loop timed alone), conv_binary and
  // gemm_binary 6-13% faster. Neutral where adds and FMAs share ports (Intel's AVX-512 cores); not on AVX2,
  // whose lookup's blend already runs there (1-3% slower measured). No multiplication by a weight or an
  // activation: x * 1 is the add's operand unchanged.
  static fb accumulate_lookup(fb acc, fb x, std::size_t v) {
    if constexpr (simd_compat::is_avx512<A>)
      if (v % 2) return simd_compat::add_on_fma_unit<A>(acc, x);
    return acc + x;
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
        case 7:
          return f.template operator()<7>();
        case 6:
          return f.template operator()<6>();
        case 5:
          return f.template operator()<5>();
        case 4:
          return f.template operator()<4>();
        default:
          break;
      }
    }
    switch (rows) {
      case 3:
        return f.template operator()<3>();
      case 2:
        return f.template operator()<2>();
      case 1:
        return f.template operator()<1>();
      default:
        return;
    }
  }

  // Loads (or zeroes, for the first K block) an R x NV-vector tile of C, whose element (r, j) lies at
  // c[r * c_rs + j * c_cs]; rows < h and columns < w are valid.
  template <std::size_t R, std::size_t NV>
  static void load_strided_tile(fb (&acc)[R][NV], bool first, const float* c, std::size_t c_rs, std::size_t c_cs,
                                std::size_t h, std::size_t w) {
    constexpr std::size_t width = NV * lanes;
    if (first || (c_cs == 1 && h == R && w == width)) {
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < NV; ++v)
          acc[r][v] = first ? fb(0.0f) : fb::load_unaligned(c + r * c_rs + v * lanes);
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
};

// The workspace at `offset` bytes, rounded up to a cache line.
template <class T>
T* at_bytes(void* base, std::size_t offset) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(base) + round_up(offset, 64));
}

// ---- the list-driven GEMMs (gemm_shift both ways, gemm_f32's skip_zero_a) -----------------------------------
// One operand's nonzeros are listed per tile of list_tile_rows of its rows ("listed" dimension of C), once per K
// block and block of bl.mc listed rows; the other operand is packed once per panel of `panel_width`
// ("panelled" dimension) and every tile of the block runs over that panel. The workspace holds the block's
// lists (8 bytes per listed row and K index), each tile's step count and one panel, as shift_workspace_bytes
// sizes it.
//
// A tile owns the kb * 4 slots of its rows. Step s of its list is four entries, one per row: values[4 s + r]
// (32 bits: a code's addend, or a float's bits) and rows[4 s + r], the panel row the entry reads (16 bits:
// shift_blocks keeps K blocks at most shift_kc_max deep, so every row and the padding row kb fit). A step is then one
// 8-byte load (the rows) and one 16-byte load (the values, broadcast by in-register shuffles), where four
// 8-byte entries cost an address load and a broadcast load each: the tiles are bound by loads (AMD EPYC Zen 5
// issues about two per cycle; the codes tile's loop timed alone ran 32% faster so).
inline constexpr std::size_t list_tile_rows = 4;
static_assert(shift_kc_max <= 0xffff, "a K block's rows and its padding row fit the lists' 16 bits");
struct list_slot {  // the unit the lists' storage is counted in (8 bytes per listed row and K index)
  std::uint32_t words[2];
};
struct tile_list {
  std::uint32_t* values;
  std::uint16_t* rows;
  void set(std::size_t step, std::size_t r, std::size_t row, std::uint32_t value) const {
    values[list_tile_rows * step + r] = value;
    rows[list_tile_rows * step + r] = static_cast<std::uint16_t>(row);
  }
};
// The list of the tile whose slots start at `region`, in a K block of kb.
inline tile_list tile_list_at(list_slot* region, std::size_t kb) {
  auto* values = reinterpret_cast<std::uint32_t*>(region);
  return {values, reinterpret_cast<std::uint16_t*>(values + list_tile_rows * kb)};
}
// Step `step` of a tile's list: its rows (one 8-byte load) and where its four values are.
struct list_step {
  std::uint64_t rows;  // row r in bits 16 r .. 16 r + 15
  const std::uint32_t* values;
  static list_step at(tile_list list, std::size_t step) {
    list_step s{0, list.values + list_tile_rows * step};
    std::memcpy(&s.rows, list.rows + list_tile_rows * step, sizeof s.rows);
    return s;
  }
  std::size_t row(std::size_t r) const { return static_cast<std::size_t>((rows >> (16 * r)) & 0xffffu); }
};
// Value r of a step whose values were loaded by simd_compat::load_quad, in every lane. The tiles' loops over
// r are unrolled (four rows), so r is a constant here and the switch folds away (quad_lane's shuffle takes
// its lane as an immediate).
template <class A>
simd_compat::ubatch<A> quad_value(simd_compat::ubatch<A> quad, std::size_t r) {
  switch (r) {
    case 0:
      return simd_compat::quad_lane<A, 0>(quad);
    case 1:
      return simd_compat::quad_lane<A, 1>(quad);
    case 2:
      return simd_compat::quad_lane<A, 2>(quad);
    default:
      return simd_compat::quad_lane<A, 3>(quad);
  }
}
template <class Panel>
struct list_workspace {
  list_slot* lists;
  std::uint32_t* steps;
  Panel* panel;
};
template <class Panel>
list_workspace<Panel> list_workspace_of(void* workspace, const gemm_blocks& bl) {
  static_assert(sizeof(list_slot) == 8, "shift_workspace_bytes counts 8 bytes per list slot");
  return {at_bytes<list_slot>(workspace, 0), at_bytes<std::uint32_t>(workspace, 8 * bl.mc * bl.kc),
          at_bytes<Panel>(workspace, 8 * bl.mc * bl.kc + 4 * bl.mc / list_tile_rows + 64)};
}
// The loop nest: per K block [pc, pc + kb) and block of bl.mc listed rows, build(row0, rows, pc, kb, slots, steps)
// lists rows [row0, row0 + rows) (at most `build_rows`, a multiple of list_tile_rows, at a time) into the block's
// slots from their first tile's on and writes those tiles' steps; then per panel pack(pc, kb, col0, cols) packs it
// and returns what the tiles must know of it, and run(packed, steps, list, row0, rows, col0, cols, first) runs
// each tile (first: the first K block, C starts from zero). build may use the panel as scratch: the panel is
// packed only after the block's lists are built.
template <class Build, class Pack, class Run>
void list_driven_loops(std::size_t listed, std::size_t panelled, std::size_t depth, const gemm_blocks& bl,
                       std::size_t build_rows, std::size_t panel_width, list_slot* lists, std::uint32_t* steps,
                       Build&& build, Pack&& pack, Run&& run) {
  constexpr std::size_t tile_rows = list_tile_rows;
  for (std::size_t pc = 0; pc < depth; pc += bl.kc) {
    const std::size_t kb = std::min(bl.kc, depth - pc);
    for (std::size_t rc = 0; rc < listed; rc += bl.mc) {
      const std::size_t rb = std::min(bl.mc, listed - rc);
      for (std::size_t r0 = 0; r0 < rb; r0 += build_rows)
        build(rc + r0, std::min(build_rows, rb - r0), pc, kb, lists + r0 * kb, steps + r0 / tile_rows);
      for (std::size_t c0 = 0; c0 < panelled; c0 += panel_width) {
        const std::size_t cols = std::min(panel_width, panelled - c0);
        const auto packed = pack(pc, kb, c0, cols);
        for (std::size_t r0 = 0; r0 < rb; r0 += tile_rows)
          run(packed, steps[r0 / tile_rows], tile_list_at(lists + r0 * kb, kb), rc + r0, std::min(tile_rows, rb - r0),
              c0, cols, pc == 0);
      }
    }
  }
}

inline void zero_output(std::size_t m, std::size_t n, float* c, std::size_t ldc) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
}

}  // namespace
}  // namespace fewmul::kernels::detail
