#pragma once
// gemm_shift: GEMM by power-of-two codes as integer adds (contract in fewmul/kernels.hpp).
#include <bit>
#include <limits>

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
  static constexpr std::uint32_t shift_addend(int code) {
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

  // ---- list_b: B's nonzeros drive the loop --------------------------------------------------------
  // The same sums with the roles exchanged: each column j of B becomes the list of its nonzero floats in
  // k order, (offset of Q's row k in the code panel, bits(B[k][j])), and Q's codes are packed as addends
  // into a panel [kb + 1][nr] whose vectors run along m. A zero code must not add anything, so it is
  // packed as a sentinel and masked: 0x3f800001 has a low bit set (every addend is a multiple of 2^23) and
  // is a normal float, so the float compare that makes the mask is not affected by denormals-as-zero; the
  // panel's extra row is all sentinels, for the padding entries. Every nonzero product is added in k order
  // exactly as in the other mode, so the results are the same bits.
  // Four vectors of m per tile row (two in the other mode): each entry (a scalar load and a broadcast) is
  // then amortized over twice the products.
  static constexpr std::size_t list_nv = 4;
  static constexpr std::size_t list_nr = list_nv * lanes;
  static constexpr std::uint32_t zero_code_sentinel = 0x3f800001u;
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
  static std::size_t build_float_lists(const gemm_shift_params& p, std::size_t j0, std::size_t h, std::size_t pc,
                                       std::size_t kb, shift_entry* list, bool& out_of_range) {
    const float tiny = tiny_b, huge = huge_b;
    std::size_t counts[shift_mr] = {};
    bool bad = false;
    for (std::size_t q = 0; q < kb; ++q) {
      const float* row = p.b + (pc + q) * p.ldb + j0;
      for (std::size_t r = 0; r < h; ++r) {  // branch-free, as build_shift_lists
        std::uint32_t bits;
        std::memcpy(&bits, row + r, sizeof bits);
        const float a = std::fabs(row[r]);
        list[counts[r] * shift_mr + r] = {static_cast<std::uint32_t>(q * list_nr), bits};
        counts[r] += a < tiny ? 0 : 1;
        bad |= !(a <= huge);
      }
    }
    out_of_range = out_of_range || bad;
    std::size_t steps = 0;
    for (std::size_t r = 0; r < h; ++r) steps = std::max(steps, counts[r]);
    const shift_entry padding{static_cast<std::uint32_t>(kb * list_nr), 0u};
    for (std::size_t r = 0; r < shift_mr; ++r)
      for (std::size_t s = r < h ? counts[r] : 0; s < steps; ++s) list[s * shift_mr + r] = padding;
    return steps;
  }
  // Codes of Q rows i0 .. i0 + w (along m), K rows pc .. pc + kb, as addends [kb + 1][nr].
  static void pack_q_addends(const gemm_shift_params& p, std::size_t pc, std::size_t kb, std::size_t i0, std::size_t w,
                             std::uint32_t* panel) {
    for (std::size_t q = 0; q < kb; ++q) {
      const auto* codes = reinterpret_cast<const std::uint8_t*>(p.q + i0 * p.q_rs + (pc + q) * p.q_cs);
      std::uint32_t* dst = panel + q * list_nr;
      if (w == list_nr && p.q_rs == 1) {  // shift_addend on vectors: (|code| - bias) << 23, plus 2^31 if negative
        const auto* signed_codes = reinterpret_cast<const std::int8_t*>(codes);
        for (std::size_t v = 0; v < list_nv; ++v) {
          const ib code = simd_compat::load_i8_widened<A>(signed_codes + v * lanes);
          const ib addend = ((xsimd::abs(code) - ib(pow2_code_bias)) << 23) +
                            xsimd::select(code < ib(0), ib(std::numeric_limits<std::int32_t>::min()), ib(0));
          xsimd::select(code == ib(0), ib(static_cast<std::int32_t>(zero_code_sentinel)), addend)
              .store_aligned(reinterpret_cast<std::int32_t*>(dst) + v * lanes);
        }
      } else {
        for (std::size_t t = 0; t < list_nr; ++t)
          dst[t] = t < w ? panel_addends.of_byte[codes[t * p.q_rs]] : zero_code_sentinel;
      }
    }
    for (std::size_t t = 0; t < list_nr; ++t) panel[kb * list_nr + t] = zero_code_sentinel;
  }
  static void float_list_tile(std::size_t steps, const shift_entry* list, const std::uint32_t* panel, float* c,
                              std::size_t c_rs, std::size_t c_cs, std::size_t h, std::size_t w, bool first) {
    fb acc[shift_mr][list_nv];
    load_strided_tile(acc, first, c, c_rs, c_cs, h, w);
    const ub sentinel(zero_code_sentinel);
    for (std::size_t s = 0; s < steps; ++s)
      for (std::size_t r = 0; r < shift_mr; ++r) {
        const shift_entry e = list[s * shift_mr + r];
        const ub b_bits(e.addend);
        const std::uint32_t* row = panel + e.offset;
        for (std::size_t v = 0; v < list_nv; ++v) {
          const ub addend = ub::load_aligned(row + v * lanes);
          const fb product = simd_compat::as_float<A>(addend + b_bits);
          acc[r][v] = xsimd::select(simd_compat::as_float<A>(addend) != simd_compat::as_float<A>(sentinel),
                                    acc[r][v] + product, acc[r][v]);
        }
      }
    store_strided_tile(acc, c, c_rs, c_cs, h, w);
  }
  static void gemm_shift_list_b(const gemm_shift_params& p) noexcept {
    bool out_of_range = false;
    const gemm_blocks bl = shift_blocks(p.caches, shift_mr, list_nr);
    const auto ws = list_workspace_of<shift_entry, std::uint32_t>(p.workspace, bl, shift_mr);
    list_driven_loops(  // listed: B's columns (n); panels: the codes along m; C's tile: rows along n, vectors along m
        p.n, p.m, p.k, bl, shift_mr, list_nr, ws.steps,
        [&](std::size_t j0, std::size_t h, std::size_t pc, std::size_t kb, std::size_t list) {
          return build_float_lists(p, j0, h, pc, kb, ws.lists + list, out_of_range);
        },
        [&](std::size_t pc, std::size_t kb, std::size_t i0, std::size_t w) {
          pack_q_addends(p, pc, kb, i0, w, ws.panel);
          return true;
        },
        [&](bool, std::size_t steps, std::size_t list, std::size_t j0, std::size_t h, std::size_t i0, std::size_t w,
            bool first) {
          float_list_tile(steps, ws.lists + list, ws.panel, p.c + i0 * p.c_rs + j0 * p.c_cs, p.c_cs, p.c_rs, h, w,
                          first);
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
    const auto ws = list_workspace_of<shift_entry, float>(p.workspace, bl, shift_mr);
    list_driven_loops(  // listed: the codes' rows (m); panels: B along n
        p.m, p.n, p.k, bl, shift_mr, shift_nr, ws.steps,
        [&](std::size_t i0, std::size_t h, std::size_t pc, std::size_t kb, std::size_t list) {
          return build_shift_lists(p, i0, h, pc, kb, ws.lists + list);
        },
        [&](std::size_t pc, std::size_t kb, std::size_t j0, std::size_t w) {
          return pack_b_shift(p, pc, kb, j0, w, ws.panel, out_of_range);  // whether the tiles must test B
        },
        [&](bool b_has_zeros, std::size_t steps, std::size_t list, std::size_t i0, std::size_t h, std::size_t j0,
            std::size_t w, bool first) {
          const auto tile = b_has_zeros ? &shift_tile<true> : &shift_tile<false>;
          tile(steps, ws.lists + list, ws.panel, p.c + i0 * p.c_rs + j0 * p.c_cs, p.c_rs, p.c_cs, h, w, first);
        });
    if (out_of_range && p.b_out_of_range) *p.b_out_of_range = true;
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
