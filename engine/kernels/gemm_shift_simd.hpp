#pragma once
// gemm_shift: GEMM by power-of-two codes as integer adds (contract in fewmul/kernels.hpp).
#include <bit>
#include <limits>
#include <utility>

#include "kernels/gemm_operands.hpp"
#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct gemm_shift_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lanes;
  using base::load_strided_tile;
  using base::store_strided_tile;
  using typename base::fb;
  using typename base::ib;
  using typename base::ub;

  // ---- shift GEMM (quantized-backprop weight gradient) --------------------------------------------
  // A product b * (±2^e) is the integer add  bits(b) + (e << 23) + (s << 31): the first term moves the
  // exponent field by e (no carry out while the result stays normal, which the caller's range on B
  // guarantees), the second flips the sign bit (adding 2^31 modulo 2^32 is an XOR of bit 31).

  // Codes are the broadcast operand, so a zero code (ReLU zeros: about half of a layer's inputs) skips a
  // whole row of the register tile: each row of A becomes the list of its nonzero codes in k order, as
  // (B's row in the packed panel, addend (e << 23) + (s << 31)) (layout: simd_common.hpp). The rows of a
  // panel step through their lists together; a shorter list is padded with entries pointing at the panel's
  // extra row of zeros, which B's own zero test then skips like any zero of B.
  static constexpr std::size_t shift_mr = list_tile_rows;
  // Two vectors of columns: the B panel of a whole minibatch (200 rows x 32 floats = 25 KiB on AVX-512)
  // stays in L1 in one K block; four vectors (fewer entry loads per product) measured 40% slower on the
  // weight gradient, whose K block then split and whose transposed C tile was stored twice.
  static constexpr std::size_t shift_nv = 2;
  static constexpr std::size_t shift_nr = shift_nv * lanes;
  static constexpr std::uint32_t shift_addend(int code) {
    const int magnitude = code < 0 ? -code : code;
    return (static_cast<std::uint32_t>(magnitude - pow2_code_bias) << 23) + (code < 0 ? 0x80000000u : 0u);
  }
  // ---- lists of lanes rows at a time (both modes, operand read with the listed dimension contiguous) ----
  // The listed operand is stored along the listed dimension, so one list (along k) is strided. The lists of
  // lanes neighbours are built together: a square of lanes k x lanes neighbours is loaded by k, transposed in
  // registers, and each neighbour's nonzeros are compress-stored in k order into `scratch` [2][lanes][kb]
  // (panel rows, then values) before the tiles' entries are interleaved [step][shift_mr]. The lists are
  // those of a scalar loop over k. The scratch is the panel's storage (floats in the codes mode), so it is
  // written and read as bytes.
  struct lane_indices {
    alignas(64) std::uint32_t index[lanes];
    constexpr lane_indices() : index() {
      for (std::size_t l = 0; l < lanes; ++l) index[l] = static_cast<std::uint32_t>(l);
    }
  };
  static constexpr lane_indices lane_iota{};
  // load_row(q) gives row q < kb of the square (lanes neighbours; zeros past `count`); list(column) gives the
  // bit field of the column's listed lanes and the values to list. Adds each neighbour's list length to counts.
  template <class LoadRow, class ListColumn>
  static void compress_lists(std::size_t count, std::size_t kb, unsigned char* scratch, std::uint32_t* counts,
                             LoadRow&& load_row, ListColumn&& list) {
    const ub lane_row = ub::load_aligned(lane_iota.index);
    for (std::size_t q0 = 0; q0 < kb; q0 += lanes) {
      fb square[lanes];
      for (std::size_t l = 0; l < lanes; ++l) square[l] = q0 + l < kb ? load_row(q0 + l) : fb(0.0f);
      simd_compat::transpose_square<A>(square);
      const ub rows = ub(static_cast<std::uint32_t>(q0)) + lane_row;
      // A list holds at most q0 entries before this square, so the stores stay below kb in its scratch.
      const std::size_t valid = std::min(lanes, kb - q0);
      for (std::size_t c = 0; c < count; ++c) {
        const auto [listed, values] = list(square[c]);
        simd_compat::compress_store<A>(rows, listed, valid, scratch + 4 * (c * kb + counts[c]));
        counts[c] += static_cast<std::uint32_t>(
            simd_compat::compress_store<A>(values, listed, valid, scratch + 4 * ((lanes + c) * kb + counts[c])));
      }
    }
  }
  // The compressed lists of `count` neighbours as the lists of count / shift_mr tiles (rounded up) at `list`; a
  // shorter list (or one past count) padded to the tile's longest with entries of the panel's extra row kb and
  // `padding` as value.
  static void interleave_lists(const unsigned char* scratch, const std::uint32_t* counts, std::size_t count,
                               std::size_t kb, std::uint32_t padding, list_slot* list, std::uint32_t* steps) {
    for (std::size_t t = 0; t * shift_mr < count; ++t) {
      const tile_list tile = tile_list_at(list + t * shift_mr * kb, kb);
      std::uint32_t tile_steps = 0;
      for (std::size_t r = 0; r < shift_mr && t * shift_mr + r < count; ++r)
        tile_steps = std::max(tile_steps, counts[t * shift_mr + r]);
      for (std::size_t r = 0; r < shift_mr; ++r) {
        const std::size_t c = t * shift_mr + r;
        const std::size_t listed = c < count ? counts[c] : 0;
        const unsigned char *row = scratch + 4 * c * kb, *value = scratch + 4 * (lanes + c) * kb;
        for (std::size_t s = 0; s < listed; ++s) {
          std::uint32_t row_s, value_s;
          std::memcpy(&row_s, row + 4 * s, 4);
          std::memcpy(&value_s, value + 4 * s, 4);
          tile.set(s, r, row_s, value_s);
        }
        for (std::size_t s = listed; s < tile_steps; ++s) tile.set(s, r, kb, padding);
      }
      steps[t] = tile_steps;
    }
  }

  // Codes of rows i0 .. i0 + count (count <= lanes), contiguous along the rows (q_rs = 1): their lists at `list`.
  static void build_shift_lists_square(const gemm_shift_params& p, std::size_t i0, std::size_t count, std::size_t pc,
                                       std::size_t kb, unsigned char* scratch, list_slot* list, std::uint32_t* steps) {
    std::uint32_t counts[lanes] = {};
    const segment_runs runs = runs_of(p.q_rows != nullptr, p.q_column + i0, count, p.q_segment);
    compress_lists(
        count, kb, scratch, counts,
        [&](std::size_t q) {
          const std::int8_t* const* row = p.q_rows ? p.q_rows + (pc + q) * p.q_cs : nullptr;
          if (count == lanes && (!row || runs.count == 1)) {
            const std::int8_t* src =
                row ? row[runs.runs[0].segment] + runs.runs[0].within : p.q + i0 + (pc + q) * p.q_cs;
            return xsimd::bitwise_cast<fb>(simd_compat::load_i8_widened<A>(src));
          }
          std::int8_t part[lanes] = {};
          if (row) {
            for (std::size_t r = 0; r < runs.count; ++r)
              std::memcpy(part + runs.runs[r].offset, row[runs.runs[r].segment] + runs.runs[r].within,
                          runs.runs[r].length);
          } else {
            std::memcpy(part, p.q + i0 + (pc + q) * p.q_cs, count);
          }
          return xsimd::bitwise_cast<fb>(simd_compat::load_i8_widened<A>(part));
        },
        [](fb column) {  // shift_addend on vectors, as pack_q_addends
          const ib code = xsimd::bitwise_cast<ib>(column);
          const ib addend = ((xsimd::abs(code) - ib(pow2_code_bias)) << 23) +
                            xsimd::select(code < ib(0), ib(std::numeric_limits<std::int32_t>::min()), ib(0));
          // The nonzero test on the codes converted exactly to float (their bits would be denormals).
          return std::pair{simd_compat::bits_from_mask<A>(xsimd::to_float(code) != fb(0.0f)),
                           xsimd::bitwise_cast<ub>(addend)};
        });
    interleave_lists(scratch, counts, count, kb, 0u, list, steps);
  }
  // The list of rows i0 .. i0 + h of the K block [pc, pc + kb) at `list`; returns its steps.
  static std::size_t build_shift_lists(const gemm_shift_params& p, std::size_t i0, std::size_t h, std::size_t pc,
                                       std::size_t kb, list_slot* slots) {
    const tile_list list = tile_list_at(slots, kb);
    std::size_t counts[shift_mr] = {}, steps = 0;
    for (std::size_t r = 0; r < h; ++r) {
      // Row i0 + r: strided codes, or one place in every indirect row (located once).
      const std::size_t t = p.q_column + i0 + r, segment = p.q_rows ? t / p.q_segment : 0;
      const std::size_t within = p.q_rows ? t % p.q_segment : 0;
      const std::int8_t* row = p.q_rows ? nullptr : p.q + (i0 + r) * p.q_rs + pc * p.q_cs;
      std::size_t count = 0;
      for (std::size_t q = 0; q < kb; ++q) {  // branch-free: zeros are random, so a branch would mispredict
        const int code = row ? row[q * p.q_cs] : p.q_rows[(pc + q) * p.q_cs + segment][within];
        list.set(count, r, q, shift_addend(code));
        count += code != 0 ? 1 : 0;
      }
      counts[r] = count;
      steps = std::max(steps, count);
    }
    for (std::size_t r = 0; r < shift_mr; ++r)
      for (std::size_t s = counts[r]; s < steps; ++s) list.set(s, r, kb, 0u);
    return steps;
  }
  // B rows pc .. pc + kb, columns j0 .. j0 + w, into a panel [kb + 1][nr] whose last row is zeros. Returns
  // whether B's rows pc .. pc + kb hold a zero in those columns, i.e. whether the tile must test B.
  // 2^-shift_safe_exponent and 2^shift_safe_exponent, built from their exponent fields at compile time.
  static constexpr float tiny_b = std::bit_cast<float>(static_cast<std::uint32_t>(127 - shift_safe_exponent) << 23);
  static constexpr float huge_b = std::bit_cast<float>(static_cast<std::uint32_t>(127 + shift_safe_exponent) << 23);
  // B rows pc .. pc + kb, columns j0 .. j0 + w, into a panel [kb + 1][nr] whose last row is zeros, values below
  // the shift-safe range flushed to zero. Returns whether the panel holds a zero, i.e. whether the tile must
  // test B; sets `out_of_range` for a value above the range or not finite.
  static bool pack_b_shift(const gemm_shift_params& p, std::size_t pc, std::size_t kb, std::size_t j0, std::size_t w,
                           float* panel, bool& out_of_range) {
    const fb tiny(tiny_b), huge(huge_b);
    auto zero = fb(1.0f) == fb(0.0f);
    auto bad = zero;
    bool scalar_zero = false, scalar_bad = false;
    for (std::size_t q = 0; q < kb; ++q) {
      const float* src = p.b + (pc + q) * p.ldb + j0;
      float* dst = panel + q * shift_nr;
      if (w == shift_nr) {
        for (std::size_t v = 0; v < shift_nv; ++v) {
          const fb b = fb::load_unaligned(src + v * lanes), a = xsimd::abs(b);
          const auto flush = a < tiny;
          xsimd::select(flush, fb(0.0f), b).store_aligned(dst + v * lanes);
          zero = zero | flush;
          bad = bad | !(a <= huge);
        }
      } else {  // padding columns are zeros, but their sums are never stored: only real columns count
        for (std::size_t j = 0; j < shift_nr; ++j) {
          const float b = j < w ? src[j] : 0.0f, a = std::fabs(b);
          dst[j] = a < tiny_b ? 0.0f : b;
          if (j < w) {
            scalar_zero |= a < tiny_b;
            scalar_bad |= !(a <= huge_b);
          }
        }
      }
    }
    for (std::size_t j = 0; j < shift_nr; ++j) panel[kb * shift_nr + j] = 0.0f;
    out_of_range = out_of_range || scalar_bad || xsimd::any(bad);
    return scalar_zero || xsimd::any(zero);
  }

  // TestB: B holds zeros, so each product is added only where B is nonzero. Without zeros in B (the usual
  // gradient) only the padding entries meet a zero: their addend 0 leaves it +0, and adding +0 changes no
  // accumulator (which is never -0: it starts at +0 and takes nonzero terms), so no test is needed.
  template <bool TestB>
  static void shift_tile(std::size_t steps, tile_list list, const float* panel, float* c, std::size_t c_rs,
                         std::size_t c_cs, std::size_t h, std::size_t w, bool first) {
    fb acc[shift_mr][shift_nv];
    load_strided_tile(acc, first, c, c_rs, c_cs, h, w);
    for (std::size_t s = 0; s < steps; ++s) {
      const auto step = list_step::at(list, s);
      const ub quad = simd_compat::load_quad<A>(step.values);
      for (std::size_t r = 0; r < list_tile_rows; ++r) {
        const ub addend = quad_value<A>(quad, r);
        const float* row = panel + step.row(r) * shift_nr;
        for (std::size_t v = 0; v < shift_nv; ++v) {
          const fb b = fb::load_aligned(row + v * lanes);
          const fb product = simd_compat::as_float<A>(simd_compat::as_bits<A>(b) + addend);
          if constexpr (TestB)
            acc[r][v] = xsimd::select(b != fb(0.0f), acc[r][v] + product, acc[r][v]);
          else
            acc[r][v] = acc[r][v] + product;
        }
      }
    }
    store_strided_tile(acc, c, c_rs, c_cs, h, w);
  }

  // ---- list_b: B's nonzeros drive the loop --------------------------------------------------------
  // The same sums with the roles exchanged: each column j of B becomes the list of its nonzero floats in
  // k order, (Q's row k in the code panel, bits(B[k][j])), and Q's codes are packed as addends
  // into a panel [kb + 1][nr] whose vectors run along m. A zero code must not add anything, so it is
  // packed as a sentinel and masked: 0x3f800001 has a low bit set, and every addend is a multiple of 2^23.
  // The mask is an integer compare of the loaded addend, so one load feeds both the compare and the add (a
  // float compare made GCC load every panel vector twice; the tile is bound by loads, and this CPU issues
  // about two per cycle: 7-13% faster). The panel's extra row is all sentinels, for the padding entries.
  // Every nonzero product is added in k order exactly as in the other mode, so the results are the same bits.
  // Four vectors of m per tile row (two in the other mode) where 32 vector registers hold the 16 sums: each
  // entry (a broadcast) is then amortized over twice the products. With 16 registers (AVX2, SSE) two: four
  // spilled the sums (AVX2 on AMD EPYC Zen 5: two vectors 10% faster).
  static constexpr std::size_t list_nv = simd_compat::vector_registers<A> >= 32 ? 4 : 2;
  static constexpr std::size_t list_nr = list_nv * lanes;
  static constexpr std::uint32_t zero_code_sentinel = 0x3f800001u;
  // Rows read ahead (software prefetch) where an operand is read down a column of cache lines.
  static constexpr std::size_t prefetch_rows = 2 * lanes;
  // The panel entry of every code byte: a table load instead of a data-dependent branch (half the codes
  // are zero, at random).
  struct addend_table {
    std::uint32_t of_byte[256];
    constexpr addend_table() : of_byte() {
      for (int b = 0; b < 256; ++b) {
        const int code = b < 128 ? b : b - 256;
        of_byte[b] = code == 0 ? zero_code_sentinel : shift_addend(code);
      }
    }
  };
  static constexpr addend_table panel_addends{};
  // Lists of B's columns j0 .. j0 + count (count <= lanes) of the K block [pc, pc + kb) at `list`; B is
  // row-major, so the columns are the contiguous neighbours.
  static void build_float_lists(const gemm_shift_params& p, std::size_t j0, std::size_t count, std::size_t pc,
                                std::size_t kb, unsigned char* scratch, list_slot* list, std::uint32_t* steps,
                                bool& out_of_range) {
    const fb tiny(tiny_b), huge(huge_b);
    auto bad = fb(1.0f) == fb(0.0f);
    std::uint32_t counts[lanes] = {};
    compress_lists(
        count, kb, scratch, counts,
        [&](std::size_t q) {
          const float* src = p.b + (pc + q) * p.ldb + j0;
          // B (a layer's whole dy) is usually larger than the caches and read once, down a column of lines: the
          // line prefetch_rows below is requested now, so its load does not wait on memory.
          if (pc + q + prefetch_rows < p.k) simd_compat::prefetch_line(src + prefetch_rows * p.ldb);
          const fb row = count == lanes ? fb::load_unaligned(src) : simd_compat::load_first<A>(src, count);
          bad = bad | !(xsimd::abs(row) <= huge);
          return row;
        },
        [&](fb column) {  // values below the shift-safe range count as zeros; NaN is kept (and reported)
          return std::pair{simd_compat::bits_from_mask<A>(!(xsimd::abs(column) < tiny)),
                           simd_compat::as_bits<A>(column)};
        });
    out_of_range = out_of_range || xsimd::any(bad);
    interleave_lists(scratch, counts, count, kb, 0u, list, steps);
  }
  // shift_addend on vectors: (|code| - bias) << 23, plus 2^31 if negative; the sentinel for a zero code.
  static ib addends_of(const std::int8_t* codes) {
    const ib code = simd_compat::load_i8_widened<A>(codes);
    const ib addend = ((xsimd::abs(code) - ib(pow2_code_bias)) << 23) +
                      xsimd::select(code < ib(0), ib(std::numeric_limits<std::int32_t>::min()), ib(0));
    return xsimd::select(code == ib(0), ib(static_cast<std::int32_t>(zero_code_sentinel)), addend);
  }
  // Codes of Q rows i0 .. i0 + w (along m), K rows pc .. pc + kb, as addends [kb + 1][nr]: a whole panel row of
  // contiguous codes in list_nv vectors, else one contiguous run at a time (the panel's runs of an indirection
  // buffer, located once; one code for other strides), in vectors where a run holds them.
  static void pack_q_addends(const gemm_shift_params& p, std::size_t pc, std::size_t kb, std::size_t i0, std::size_t w,
                             std::uint32_t* panel) {
    const segment_runs runs = runs_of(p.q_rows != nullptr, p.q_column + i0, w, p.q_segment);
    const bool whole = w == list_nr && (p.q_rows ? runs.count == 1 : p.q_rs == 1);
    for (std::size_t q = 0; q < kb; ++q) {
      std::uint32_t* dst = panel + q * list_nr;
      const std::int8_t* const* row = p.q_rows ? p.q_rows + (pc + q) * p.q_cs : nullptr;
      if (whole) {
        const std::int8_t* src = row ? row[runs.runs[0].segment] + runs.runs[0].within : p.q + i0 + (pc + q) * p.q_cs;
        // The codes of a convolution's weight gradient are read down a column, as B in build_float_lists:
        // requested prefetch_rows ahead.
        if (pc + q + prefetch_rows < p.k)
          simd_compat::prefetch_line(row ? row[prefetch_rows * p.q_cs + runs.runs[0].segment] + runs.runs[0].within
                                         : src + prefetch_rows * p.q_cs);
        for (std::size_t v = 0; v < list_nv; ++v)
          addends_of(src + v * lanes).store_aligned(reinterpret_cast<std::int32_t*>(dst) + v * lanes);
        continue;
      }
      if (row) {
        for (std::size_t r = 0; r < runs.count; ++r) {
          const auto& run = runs.runs[r];
          const std::int8_t* src = row[run.segment] + run.within;
          std::size_t u = 0;
          for (; u + lanes <= run.length; u += lanes)
            addends_of(src + u).store_unaligned(reinterpret_cast<std::int32_t*>(dst + run.offset + u));
          for (; u < run.length; ++u) dst[run.offset + u] = panel_addends.of_byte[static_cast<std::uint8_t>(src[u])];
        }
      } else {
        for (std::size_t t = 0; t < w; ++t)
          dst[t] = panel_addends.of_byte[static_cast<std::uint8_t>(p.q[(i0 + t) * p.q_rs + (pc + q) * p.q_cs])];
      }
      for (std::size_t t = w; t < list_nr; ++t) dst[t] = zero_code_sentinel;
    }
    for (std::size_t t = 0; t < list_nr; ++t) panel[kb * list_nr + t] = zero_code_sentinel;
  }
  static void float_list_tile(std::size_t steps, tile_list list, const std::uint32_t* panel, float* c, std::size_t c_rs,
                              std::size_t c_cs, std::size_t h, std::size_t w, bool first) {
    fb acc[shift_mr][list_nv];
    load_strided_tile(acc, first, c, c_rs, c_cs, h, w);
    const ub sentinel(zero_code_sentinel);
    for (std::size_t s = 0; s < steps; ++s) {
      const auto step = list_step::at(list, s);
      for (std::size_t r = 0; r < list_tile_rows; ++r) {
        // A broadcast load, not load_quad's shuffles: the extra register made GCC keep this 16-accumulator
        // tile's sums in memory (30% slower).
        const ub b_bits(step.values[r]);
        const std::uint32_t* row = panel + step.row(r) * list_nr;
        for (std::size_t v = 0; v < list_nv; ++v) {
          const ub addend = ub::load_aligned(row + v * lanes);
          const fb product = simd_compat::as_float<A>(addend + b_bits);
          acc[r][v] = simd_compat::add_where_unequal<A>(acc[r][v], product, addend, sentinel);
        }
      }
    }
    store_strided_tile(acc, c, c_rs, c_cs, h, w);
  }
  static void gemm_shift_list_b(const gemm_shift_params& p) noexcept {
    bool out_of_range = false;
    const gemm_blocks bl = shift_blocks(p.caches, shift_mr, list_nr);
    const auto ws = list_workspace_of<std::uint32_t>(p.workspace, bl);
    static_assert(2 * lanes <= list_nr, "a square's compressed lists fit in the panel");
    list_driven_loops(  // listed: B's columns (n), lanes at a time; panels: the codes along m; C's tile: rows along n
        p.n, p.m, p.k, bl, lanes, list_nr, ws.lists, ws.steps,
        [&](std::size_t j0, std::size_t count, std::size_t pc, std::size_t kb, list_slot* list, std::uint32_t* steps) {
          build_float_lists(p, j0, count, pc, kb, reinterpret_cast<unsigned char*>(ws.panel), list, steps,
                            out_of_range);
        },
        [&](std::size_t pc, std::size_t kb, std::size_t i0, std::size_t w) {
          pack_q_addends(p, pc, kb, i0, w, ws.panel);
          return true;
        },
        [&](bool, std::size_t steps, tile_list list, std::size_t j0, std::size_t h, std::size_t i0, std::size_t w,
            bool first) {
          float_list_tile(steps, list, ws.panel, p.c + i0 * p.c_rs + j0 * p.c_cs, p.c_cs, p.c_rs, h, w, first);
        });
    if (out_of_range && p.b_out_of_range) *p.b_out_of_range = true;
  }

  static void gemm_shift(const gemm_shift_params& p) noexcept {
    if (p.m == 0 || p.n == 0) return;
    if (p.k == 0) {
      for (std::size_t i = 0; i < p.m; ++i)
        for (std::size_t j = 0; j < p.n; ++j) p.c[i * p.c_rs + j * p.c_cs] = 0.0f;
      return;
    }
    if (p.list_b) return gemm_shift_list_b(p);
    bool out_of_range = false;
    const gemm_blocks bl = shift_blocks(p.caches, shift_mr, shift_nr);
    const auto ws = list_workspace_of<float>(p.workspace, bl);
    static_assert(2 * lanes <= shift_nr, "a square's compressed lists fit in the panel");
    list_driven_loops(  // listed: the codes' rows (m), lanes at a time; panels: B along n
        p.m, p.n, p.k, bl, lanes, shift_nr, ws.lists, ws.steps,
        [&](std::size_t i0, std::size_t count, std::size_t pc, std::size_t kb, list_slot* list, std::uint32_t* steps) {
          // Squares of 4 lanes (SSE, NEON) list the codes slower than the scalar build (measured on SSE4.2).
          if ((p.q_rs == 1 || p.q_rows) && lanes >= 8)
            return build_shift_lists_square(p, i0, count, pc, kb, reinterpret_cast<unsigned char*>(ws.panel), list,
                                            steps);
          for (std::size_t r = 0; r < count; r += shift_mr)  // one tile at a time, a row's codes read down k
            steps[r / shift_mr] = static_cast<std::uint32_t>(
                build_shift_lists(p, i0 + r, std::min(shift_mr, count - r), pc, kb, list + r * kb));
        },
        [&](std::size_t pc, std::size_t kb, std::size_t j0, std::size_t w) {
          return pack_b_shift(p, pc, kb, j0, w, ws.panel, out_of_range);  // whether the tiles must test B
        },
        [&](bool b_has_zeros, std::size_t steps, tile_list list, std::size_t i0, std::size_t h, std::size_t j0,
            std::size_t w, bool first) {
          const auto tile = b_has_zeros ? &shift_tile<true> : &shift_tile<false>;
          tile(steps, list, ws.panel, p.c + i0 * p.c_rs + j0 * p.c_cs, p.c_rs, p.c_cs, h, w, first);
        });
    if (out_of_range && p.b_out_of_range) *p.b_out_of_range = true;
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
