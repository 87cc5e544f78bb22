#pragma once
// The few operations xsimd 8.1 lacks (or spells differently in later versions), in one place:
// lane masks from/to bit fields, float <-> int reinterpretation, a fused
// multiply-add that is exact on every ISA, correctly rounded square root and division, a lane permute, a 16-entry
// table lookup, a square in-register transpose, a compress-store, a partial load, a prefetch hint and a
// barrier against masked loads.
// Each ISA's translation unit includes this with only its own ISA enabled, so the #if guards pick
// the intrinsics that unit may use.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#if defined(__SSE2__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON) || defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace fewmul::simd_compat {
// Internal linkage: several translation units instantiate these for the same xsimd architecture with
// different flags (avx512bw with and without VPOPCNTDQ); each must keep its own copy.
namespace {

template <class A>
constexpr bool is_avx512 = std::is_base_of_v<xsimd::avx512f, A>;
template <class A>
constexpr bool is_avx = std::is_base_of_v<xsimd::avx, A> && !is_avx512<A>;
template <class A>
constexpr bool is_sse = std::is_base_of_v<xsimd::sse2, A> && !is_avx<A> && !is_avx512<A>;

/// Architectural vector registers: 32 on AVX-512 and AArch64, 16 on AVX2 and SSE (what a register tile can hold).
template <class A>
constexpr std::size_t vector_registers = is_avx512<A> || std::is_base_of_v<xsimd::neon, A> ? 32 : 16;
template <class A>
using fbatch = xsimd::batch<float, A>;
template <class A>
using ubatch = xsimd::batch<std::uint32_t, A>;
template <class A>
using ibatch = xsimd::batch<std::int32_t, A>;
template <class A>
using fmask = xsimd::batch_bool<float, A>;

/// Lane l of the result is bit l of `bits` (lanes beyond the batch size are ignored).
template <class A>
inline fmask<A> mask_from_bits(std::uint32_t bits) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return fmask<A>(static_cast<__mmask16>(bits));
#endif
  alignas(64) static constexpr std::uint32_t lane_bits[16] = {1u << 0,  1u << 1,  1u << 2,  1u << 3, 1u << 4,  1u << 5,
                                                              1u << 6,  1u << 7,  1u << 8,  1u << 9, 1u << 10, 1u << 11,
                                                              1u << 12, 1u << 13, 1u << 14, 1u << 15};
  const ubatch<A> lanes = ubatch<A>::load_aligned(lane_bits);
  const auto set = (ubatch<A>(bits) & lanes) == lanes;
#if defined(__AVX__)
  if constexpr (is_avx<A>) return fmask<A>(_mm256_castsi256_ps(set.data));
#endif
#if defined(__SSE2__)
  if constexpr (is_sse<A>) return fmask<A>(_mm_castsi128_ps(set.data));
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) return fmask<A>(set.data);
#endif
}

/// Bit l of the result is lane l of `mask`.
template <class A>
inline std::uint32_t bits_from_mask(fmask<A> mask) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return static_cast<std::uint32_t>(static_cast<__mmask16>(mask.data));
#endif
#if defined(__AVX__)
  if constexpr (is_avx<A>) return static_cast<std::uint32_t>(_mm256_movemask_ps(mask.data));
#endif
#if defined(__SSE2__)
  if constexpr (is_sse<A>) return static_cast<std::uint32_t>(_mm_movemask_ps(mask.data));
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) {
    static constexpr std::uint32_t lane_bits[4] = {1u, 2u, 4u, 8u};
    return vaddvq_u32(vandq_u32(mask.data, vld1q_u32(lane_bits)));
  }
#endif
}

/// acc + x in the lanes where a and b differ, acc elsewhere: one integer compare into a mask and a masked add
/// (AVX-512), a compare and a blend (elsewhere).
template <class A>
inline fbatch<A> add_where_unequal(fbatch<A> acc, fbatch<A> x, ubatch<A> a, ubatch<A> b) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_mask_add_ps(acc, _mm512_cmpneq_epu32_mask(a, b), acc, x);
#endif
  const auto equal = a == b;
#if defined(__AVX__)
  if constexpr (is_avx<A>) return xsimd::select(fmask<A>(_mm256_castsi256_ps(equal.data)), acc, acc + x);
#endif
#if defined(__SSE2__)
  if constexpr (is_sse<A>) return xsimd::select(fmask<A>(_mm_castsi128_ps(equal.data)), acc, acc + x);
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) return xsimd::select(fmask<A>(equal.data), acc, acc + x);
#endif
}

template <class A>
using u64batch = xsimd::batch<std::uint64_t, A>;

/// Per-lane popcount of 64-bit lanes. xsimd 8.1 has none: VPOPCNTDQ where the unit is compiled for it,
/// else the nibble table of pshufb summed by psadbw (AVX2, AVX-512BW), scalar popcnt (SSE4.2), vcnt (NEON).
template <class A>
inline u64batch<A> popcount_lanes(u64batch<A> x) noexcept {
#if defined(__AVX512VPOPCNTDQ__)
  if constexpr (is_avx512<A>) return _mm512_popcnt_epi64(x.data);
#endif
#if defined(__AVX512BW__)
  if constexpr (is_avx512<A>) {
    const __m512i table = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i low = _mm512_set1_epi8(0x0f);
    const __m512i counts =
        _mm512_add_epi8(_mm512_shuffle_epi8(table, _mm512_and_si512(x.data, low)),
                        _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(x.data, 4), low)));
    return _mm512_sad_epu8(counts, _mm512_setzero_si512());
  }
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                           2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i counts =
        _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(x.data, low)),
                        _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x.data, 4), low)));
    return _mm256_sad_epu8(counts, _mm256_setzero_si256());
  }
#endif
#if defined(__SSE4_2__)
  if constexpr (is_sse<A>) {
    return _mm_set_epi64x(
        static_cast<long long>(_mm_popcnt_u64(static_cast<std::uint64_t>(_mm_extract_epi64(x.data, 1)))),
        static_cast<long long>(_mm_popcnt_u64(static_cast<std::uint64_t>(_mm_cvtsi128_si64(x.data)))));
  }
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>)
    return vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u64(x.data)))));
#endif
}

/// a * b + c with one rounding on every ISA. xsimd 8.1's fma is a separate multiply and add on ISAs
/// without FMA units, so: vfmadd (AVX-512, AVX2 units built with -mfma), vfma (NEON), and on SSE4.2 an
/// exact emulation. There a*b is exact in double (24 + 24 bits < 53), s = a*b + c is rounded to
/// double, TwoSum gives its exact error, and an inexact even s is moved one ulp toward the exact value
/// (round to odd); rounding that to float is then correct because 53 >= 24 + 2 (Boldo and Melquiond,
/// "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd", 2008).
template <class A>
inline fbatch<A> fused_multiply_add(fbatch<A> a, fbatch<A> b, fbatch<A> c) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_fmadd_ps(a.data, b.data, c.data);
#endif
#if defined(__FMA__)
  if constexpr (is_avx<A>) return _mm256_fmadd_ps(a.data, b.data, c.data);
#endif
#if defined(__SSE4_1__) && !defined(__AVX__)
  if constexpr (is_sse<A>) {
    // Fast path: s = a*b + c rounded once to double is rounded correctly to float unless s is exactly
    // halfway between two floats (the only place a second rounding can go wrong) or outside the normal
    // float range; a vector with such a lane takes the round-to-odd path.
    auto exact = [](__m128d x, __m128d y, __m128d z) {
      const __m128d p = _mm_mul_pd(x, y);
      const __m128d s = _mm_add_pd(p, z);
      const __m128d bb = _mm_sub_pd(s, p);
      const __m128d err = _mm_add_pd(_mm_sub_pd(p, _mm_sub_pd(s, bb)), _mm_sub_pd(z, bb));
      const __m128i bits = _mm_castpd_si128(s);
      const __m128i one = _mm_set1_epi64x(1);
      const __m128d finite = _mm_cmplt_pd(_mm_andnot_pd(_mm_set1_pd(-0.0), s), _mm_set1_pd(__builtin_inf()));
      const __m128i even = _mm_cmpeq_epi64(_mm_and_si128(bits, one), _mm_setzero_si128());
      const __m128i adjust = _mm_and_si128(_mm_and_si128(even, _mm_castpd_si128(finite)),
                                           _mm_castpd_si128(_mm_cmpneq_pd(err, _mm_setzero_pd())));
      // One ulp up in magnitude when err has the sign of s, else one down.
      const __m128i differ = _mm_srli_epi64(_mm_xor_si128(bits, _mm_castpd_si128(err)), 63);
      const __m128i step = _mm_sub_epi64(one, _mm_slli_epi64(differ, 1));
      return _mm_cvtpd_ps(_mm_castsi128_pd(_mm_add_epi64(bits, _mm_and_si128(step, adjust))));
    };
    // Lanes whose double sum sits on a float midpoint (low 29 mantissa bits 1000...0) or whose magnitude
    // is not a normal float's.
    auto awkward = [](__m128d s) {
      const __m128i low = _mm_and_si128(_mm_castpd_si128(s), _mm_set1_epi64x(0x1fffffff));
      const __m128d magnitude = _mm_andnot_pd(_mm_set1_pd(-0.0), s);
      const __m128d outside =
          _mm_or_pd(_mm_cmplt_pd(magnitude, _mm_set1_pd(0x1p-126)), _mm_cmpge_pd(magnitude, _mm_set1_pd(0x1p127)));
      const __m128d zero = _mm_cmpeq_pd(s, _mm_setzero_pd());
      return _mm_or_pd(_mm_castsi128_pd(_mm_cmpeq_epi64(low, _mm_set1_epi64x(0x10000000))),
                       _mm_andnot_pd(zero, outside));
    };
    const __m128d a_lo = _mm_cvtps_pd(a.data), a_hi = _mm_cvtps_pd(_mm_movehl_ps(a.data, a.data));
    const __m128d b_lo = _mm_cvtps_pd(b.data), b_hi = _mm_cvtps_pd(_mm_movehl_ps(b.data, b.data));
    const __m128d c_lo = _mm_cvtps_pd(c.data), c_hi = _mm_cvtps_pd(_mm_movehl_ps(c.data, c.data));
    const __m128d s_lo = _mm_add_pd(_mm_mul_pd(a_lo, b_lo), c_lo), s_hi = _mm_add_pd(_mm_mul_pd(a_hi, b_hi), c_hi);
    if (_mm_movemask_pd(_mm_or_pd(awkward(s_lo), awkward(s_hi))) == 0)
      return _mm_movelh_ps(_mm_cvtpd_ps(s_lo), _mm_cvtpd_ps(s_hi));
    return _mm_movelh_ps(exact(a_lo, b_lo, c_lo), exact(a_hi, b_hi, c_hi));
  }
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) return vfmaq_f32(c.data, a.data, b.data);
#endif
}

/// acc + x issued as x * 1 + acc on the FMA unit (AVX-512), else the add. The same bits as the add: x * 1 is
/// exact, and the sum is rounded once either way.
template <class A>
inline fbatch<A> add_on_fma_unit(fbatch<A> acc, fbatch<A> x) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_fmadd_ps(x, _mm512_set1_ps(1.0f), acc);
#endif
  return acc + x;
}

/// A 16-entry float table held the way lookup16 reads it: one register (AVX-512), two (AVX2), or
/// memory (SSE4.2 and NEON, which look up lane by lane).
template <class A>
struct table16 {
  const float* entries;
};
#if defined(__AVX512F__)
template <>
struct table16<xsimd::avx512bw> {
  __m512 entries;
};
#endif
#if defined(__AVX2__)
template <>
struct table16<xsimd::avx2> {
  __m256 low, high;
};
#endif

/// The batch's lanes of int8 values at `p`, sign-extended to int32 (one pmovsxbd where the ISA has it).
template <class A>
inline ibatch<A> load_i8_widened(const std::int8_t* p) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse<A>) {
    std::int32_t four;
    std::memcpy(&four, p, sizeof four);
    return _mm_cvtepi8_epi32(_mm_cvtsi32_si128(four));
  }
#endif
  alignas(64) std::int32_t lanes[ibatch<A>::size];
  for (std::size_t l = 0; l < ibatch<A>::size; ++l) lanes[l] = p[l];
  return ibatch<A>::load_aligned(lanes);
}

/// Lane l of the result is lane idx[l] of v: one vpermps (AVX-512 and AVX2 only; the other ISAs have no
/// variable permute across the vector).
template <class A>
inline fbatch<A> permute_lanes(fbatch<A> v, ibatch<A> idx) noexcept {
  static_assert(is_avx512<A> || is_avx<A>, "permute_lanes: AVX-512 or AVX2");
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_permutexvar_ps(idx.data, v.data);
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) return _mm256_permutevar8x32_ps(v.data, idx.data);
#endif
}

/// Loads the 16 floats at `t` (64-byte aligned).
template <class A>
inline table16<A> load_table16(const float* t) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<A, xsimd::avx512bw>) return {_mm512_load_ps(t)};
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<A, xsimd::avx2>) return {_mm256_load_ps(t), _mm256_load_ps(t + 8)};
#endif
  if constexpr (!is_avx512<A> && !is_avx<A>) return {t};
}

/// Lane l of the result is entry idx[l] (0..15; 0..31 where the table is memory) of the table: vpermps (AVX-512), two
/// vpermps and a blend on index bit 3 (AVX2), lane by lane elsewhere.
template <class A>
inline fbatch<A> lookup16(const table16<A>& t, ibatch<A> idx) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<A, xsimd::avx512bw>) return permute_lanes<A>(t.entries, idx);
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<A, xsimd::avx2>) {
    const fbatch<A> low = permute_lanes<A>(t.low, idx), high = permute_lanes<A>(t.high, idx);
    return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(idx.data, 28)));
  }
#endif
  if constexpr (!is_avx512<A> && !is_avx<A>) {
    constexpr std::size_t n = fbatch<A>::size;
    alignas(64) std::int32_t lanes[n];
    alignas(64) float out[n];
    idx.store_aligned(lanes);
    for (std::size_t l = 0; l < n; ++l) out[l] = t.entries[lanes[l]];
    return fbatch<A>::load_aligned(out);
  }
}

/// A 32-entry float table for lookup32: two registers (AVX-512), four (AVX2), or memory.
template <class A>
struct table32 {
  const float* entries;
};
#if defined(__AVX512F__)
template <>
struct table32<xsimd::avx512bw> {
  __m512 low, high;
};
#endif
#if defined(__AVX2__)
template <>
struct table32<xsimd::avx2> {
  __m256 part[4];
};
#endif

/// Loads the 32 floats at `t` (64-byte aligned).
template <class A>
inline table32<A> load_table32(const float* t) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<A, xsimd::avx512bw>) return {_mm512_load_ps(t), _mm512_load_ps(t + 16)};
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<A, xsimd::avx2>)
    return {{_mm256_load_ps(t), _mm256_load_ps(t + 8), _mm256_load_ps(t + 16), _mm256_load_ps(t + 24)}};
#endif
  if constexpr (!is_avx512<A> && !is_avx<A>) return {t};
}

/// Lane l of the result is entry idx[l] (0..31) of the table: one two-source vpermt2ps (AVX-512), four
/// vpermps and three blends on index bits 3 and 4 (AVX2), lane by lane elsewhere.
template <class A>
inline fbatch<A> lookup32(const table32<A>& t, ibatch<A> idx) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<A, xsimd::avx512bw>) return _mm512_permutex2var_ps(t.low, idx.data, t.high);
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<A, xsimd::avx2>) {
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx.data, 28));
    const __m256 bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(idx.data, 27));
    const __m256 low = _mm256_blendv_ps(permute_lanes<A>(t.part[0], idx), permute_lanes<A>(t.part[1], idx), bit3);
    const __m256 high = _mm256_blendv_ps(permute_lanes<A>(t.part[2], idx), permute_lanes<A>(t.part[3], idx), bit3);
    return _mm256_blendv_ps(low, high, bit4);
  }
#endif
  if constexpr (!is_avx512<A> && !is_avx<A>) return lookup16<A>(table16<A>{t.entries}, idx);
}

/// Column-wise store of four rows: for every lane j, c[j * stride + 0..3] = (r0[j], r1[j], r2[j], r3[j]).
/// A 4x4 transpose inside each 128-bit lane (unpack + shuffle), then one 16-byte store per column, where
/// the lane by lane version costs four scalar stores. (A transposed weight gradient is written so.)
template <class A>
inline void store_columns4(fbatch<A> r0, fbatch<A> r1, fbatch<A> r2, fbatch<A> r3, float* c,
                           std::size_t stride) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) {
    const __m512 t0 = _mm512_unpacklo_ps(r0.data, r1.data), t1 = _mm512_unpackhi_ps(r0.data, r1.data);
    const __m512 t2 = _mm512_unpacklo_ps(r2.data, r3.data), t3 = _mm512_unpackhi_ps(r2.data, r3.data);
    const __m512 col[4] = {_mm512_shuffle_ps(t0, t2, 0x44), _mm512_shuffle_ps(t0, t2, 0xee),
                           _mm512_shuffle_ps(t1, t3, 0x44), _mm512_shuffle_ps(t1, t3, 0xee)};
    for (int q = 0; q < 4; ++q) {
      _mm_storeu_ps(c + (0 + q) * stride, _mm512_castps512_ps128(col[q]));
      _mm_storeu_ps(c + (4 + q) * stride, _mm512_extractf32x4_ps(col[q], 1));
      _mm_storeu_ps(c + (8 + q) * stride, _mm512_extractf32x4_ps(col[q], 2));
      _mm_storeu_ps(c + (12 + q) * stride, _mm512_extractf32x4_ps(col[q], 3));
    }
    return;
  }
#endif
#if defined(__AVX__)
  if constexpr (is_avx<A>) {
    const __m256 t0 = _mm256_unpacklo_ps(r0.data, r1.data), t1 = _mm256_unpackhi_ps(r0.data, r1.data);
    const __m256 t2 = _mm256_unpacklo_ps(r2.data, r3.data), t3 = _mm256_unpackhi_ps(r2.data, r3.data);
    const __m256 col[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xee),
                           _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xee)};
    for (int q = 0; q < 4; ++q) {
      _mm_storeu_ps(c + (0 + q) * stride, _mm256_castps256_ps128(col[q]));
      _mm_storeu_ps(c + (4 + q) * stride, _mm256_extractf128_ps(col[q], 1));
    }
    return;
  }
#endif
  constexpr std::size_t n = fbatch<A>::size;
  alignas(64) float rows[4][n];
  r0.store_aligned(rows[0]);
  r1.store_aligned(rows[1]);
  r2.store_aligned(rows[2]);
  r3.store_aligned(rows[3]);
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t r = 0; r < 4; ++r) c[j * stride + r] = rows[r][j];
}

/// The inverse of store_columns4: rows r0..r3 from four floats at c + j * stride for every lane j.
template <class A>
inline void load_columns4(fbatch<A> (&r)[4], const float* c, std::size_t stride) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) {
    __m512 col[4];
    for (int q = 0; q < 4; ++q) {
      col[q] = _mm512_castps128_ps512(_mm_loadu_ps(c + (0 + q) * stride));
      col[q] = _mm512_insertf32x4(col[q], _mm_loadu_ps(c + (4 + q) * stride), 1);
      col[q] = _mm512_insertf32x4(col[q], _mm_loadu_ps(c + (8 + q) * stride), 2);
      col[q] = _mm512_insertf32x4(col[q], _mm_loadu_ps(c + (12 + q) * stride), 3);
    }
    // A 4x4 transpose inside each 128-bit lane is its own inverse.
    const __m512 t0 = _mm512_unpacklo_ps(col[0], col[1]), t1 = _mm512_unpackhi_ps(col[0], col[1]);
    const __m512 t2 = _mm512_unpacklo_ps(col[2], col[3]), t3 = _mm512_unpackhi_ps(col[2], col[3]);
    r[0] = _mm512_shuffle_ps(t0, t2, 0x44);
    r[1] = _mm512_shuffle_ps(t0, t2, 0xee);
    r[2] = _mm512_shuffle_ps(t1, t3, 0x44);
    r[3] = _mm512_shuffle_ps(t1, t3, 0xee);
    return;
  }
#endif
  constexpr std::size_t n = fbatch<A>::size;
  alignas(64) float rows[4][n];
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t q = 0; q < 4; ++q) rows[q][j] = c[j * stride + q];
  for (std::size_t q = 0; q < 4; ++q) r[q] = fbatch<A>::load_aligned(rows[q]);
}

/// In-place transpose of a square block of lanes x lanes floats held as lanes rows: afterwards rows[c] holds
/// lane c of every former row, in row order. Bits move unchanged (NaN payloads included). AVX-512: 16 x 16 as
/// pair unpacks, quad unpacks inside 128-bit lanes, then two rounds of 128-bit lane shuffles; AVX: 8 x 8 the
/// same with one 128-bit round; SSE: the 4 x 4 unpacks alone; NEON: trn1/trn2 on 32-bit then 64-bit pairs;
/// elsewhere through memory.
template <class A>
inline void transpose_square(fbatch<A> (&rows)[fbatch<A>::size]) noexcept {
  constexpr std::size_t n = fbatch<A>::size;
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) {
    __m512 pair[16], quad[16];
    for (int i = 0; i < 16; i += 2) {  // [r_i l0, r_i+1 l0, r_i l1, r_i+1 l1] per 128-bit lane, then l2, l3
      pair[i] = _mm512_unpacklo_ps(rows[i].data, rows[i + 1].data);
      pair[i + 1] = _mm512_unpackhi_ps(rows[i].data, rows[i + 1].data);
    }
    // quad[4 g + k]: 128-bit lane L holds column 4 L + k of rows 4 g .. 4 g + 3.
    for (int g = 0; g < 4; ++g) {
      const __m512d a = _mm512_castps_pd(pair[4 * g]), b = _mm512_castps_pd(pair[4 * g + 1]);
      const __m512d c = _mm512_castps_pd(pair[4 * g + 2]), d = _mm512_castps_pd(pair[4 * g + 3]);
      quad[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
      quad[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
      quad[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
      quad[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; ++k) {  // column 4 L + k gathers 128-bit lane L of quad[k], quad[4 + k], ...
      const __m512 low01 = _mm512_shuffle_f32x4(quad[k], quad[4 + k], 0x44);   // g0 L0 L1, g1 L0 L1
      const __m512 high01 = _mm512_shuffle_f32x4(quad[k], quad[4 + k], 0xee);  // g0 L2 L3, g1 L2 L3
      const __m512 low23 = _mm512_shuffle_f32x4(quad[8 + k], quad[12 + k], 0x44);
      const __m512 high23 = _mm512_shuffle_f32x4(quad[8 + k], quad[12 + k], 0xee);
      rows[0 + k] = _mm512_shuffle_f32x4(low01, low23, 0x88);
      rows[4 + k] = _mm512_shuffle_f32x4(low01, low23, 0xdd);
      rows[8 + k] = _mm512_shuffle_f32x4(high01, high23, 0x88);
      rows[12 + k] = _mm512_shuffle_f32x4(high01, high23, 0xdd);
    }
    return;
  }
#endif
#if defined(__AVX__)
  if constexpr (is_avx<A>) {
    __m256 quad[8];
    for (int g = 0; g < 2; ++g) {
      const __m256 a = _mm256_unpacklo_ps(rows[4 * g].data, rows[4 * g + 1].data);
      const __m256 b = _mm256_unpackhi_ps(rows[4 * g].data, rows[4 * g + 1].data);
      const __m256 c = _mm256_unpacklo_ps(rows[4 * g + 2].data, rows[4 * g + 3].data);
      const __m256 d = _mm256_unpackhi_ps(rows[4 * g + 2].data, rows[4 * g + 3].data);
      quad[4 * g + 0] = _mm256_shuffle_ps(a, c, 0x44);
      quad[4 * g + 1] = _mm256_shuffle_ps(a, c, 0xee);
      quad[4 * g + 2] = _mm256_shuffle_ps(b, d, 0x44);
      quad[4 * g + 3] = _mm256_shuffle_ps(b, d, 0xee);
    }
    for (int k = 0; k < 4; ++k) {
      rows[k] = _mm256_permute2f128_ps(quad[k], quad[4 + k], 0x20);
      rows[4 + k] = _mm256_permute2f128_ps(quad[k], quad[4 + k], 0x31);
    }
    return;
  }
#endif
#if defined(__SSE2__)
  if constexpr (is_sse<A>) {
    const __m128 a = _mm_unpacklo_ps(rows[0].data, rows[1].data), b = _mm_unpackhi_ps(rows[0].data, rows[1].data);
    const __m128 c = _mm_unpacklo_ps(rows[2].data, rows[3].data), d = _mm_unpackhi_ps(rows[2].data, rows[3].data);
    rows[0] = _mm_movelh_ps(a, c);
    rows[1] = _mm_movehl_ps(c, a);
    rows[2] = _mm_movelh_ps(b, d);
    rows[3] = _mm_movehl_ps(d, b);
    return;
  }
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) {
    const float32x4_t a = vtrn1q_f32(rows[0].data, rows[1].data), b = vtrn2q_f32(rows[0].data, rows[1].data);
    const float32x4_t c = vtrn1q_f32(rows[2].data, rows[3].data), d = vtrn2q_f32(rows[2].data, rows[3].data);
    auto pairs = [](float32x4_t x, float32x4_t y, bool high) {
      const float64x2_t x2 = vreinterpretq_f64_f32(x), y2 = vreinterpretq_f64_f32(y);
      return vreinterpretq_f32_f64(high ? vtrn2q_f64(x2, y2) : vtrn1q_f64(x2, y2));
    };
    rows[0] = pairs(a, c, false);
    rows[1] = pairs(b, d, false);
    rows[2] = pairs(a, c, true);
    rows[3] = pairs(b, d, true);
    return;
  }
#endif
  if constexpr (!is_avx512<A> && !is_avx<A> && !is_sse<A>) {
    alignas(64) float block[n][n];
    for (std::size_t r = 0; r < n; ++r) rows[r].store_aligned(block[r]);
    for (std::size_t c = 0; c < n; ++c) {
      alignas(64) float column[n];
      for (std::size_t r = 0; r < n; ++r) column[r] = block[r][c];
      rows[c] = fbatch<A>::load_aligned(column);
    }
  }
}

/// For compress_store on AVX2: entry b holds, one byte each, the lanes of the set bits of b in order.
struct compress_indices8 {
  std::uint64_t of_bits[256];
  constexpr compress_indices8() : of_bits() {
    for (unsigned b = 0; b < 256; ++b)
      for (unsigned l = 0, at = 0; l < 8; ++l)
        if (b >> l & 1u) of_bits[b] |= static_cast<std::uint64_t>(l) << (8 * at++);
  }
};
inline constexpr compress_indices8 compress_table8{};

/// Stores the lanes of `values` whose bit is set in `selected` (all below lane `valid`) contiguously at dst, in
/// lane order, and returns how many; dst[count .. valid) may be overwritten too, nothing past it. Branch-free
/// (which lanes are set is data, at random): vpcompressd into a register and a masked store (AVX-512; the
/// compress-to-memory form is microcoded on AMD), a table-driven vpermd and a full store when all lanes are
/// valid (AVX2), else every valid lane stored at the running count. dst is untyped storage (stored to as
/// bytes), so it may be scratch space reused for another type.
template <class A>
inline std::size_t compress_store(ubatch<A> values, std::uint32_t selected, std::size_t valid, void* dst) noexcept {
  const auto count = static_cast<std::size_t>(std::popcount(selected));
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) {
    const __m512i packed = _mm512_maskz_compress_epi32(static_cast<__mmask16>(selected), values.data);
    _mm512_mask_storeu_epi32(dst, static_cast<__mmask16>((1u << count) - 1u), packed);
    return count;
  }
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) {
    if (valid == 8) {
      const __m256i lanes =
          _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(compress_table8.of_bits[selected & 0xffu])));
      _mm256_storeu_si256(static_cast<__m256i*>(dst), _mm256_permutevar8x32_epi32(values.data, lanes));
      return count;
    }
  }
#endif
  if constexpr (!is_avx512<A>) {
    alignas(64) std::uint32_t lanes[ubatch<A>::size];
    values.store_aligned(lanes);
    auto* out = static_cast<unsigned char*>(dst);
    for (std::size_t l = 0, at = 0; l < valid; ++l) {  // lane l lands at index at <= l < valid
      std::memcpy(out + sizeof(std::uint32_t) * at, &lanes[l], sizeof(std::uint32_t));
      at += selected >> l & 1u;
    }
  }
  return count;
}

/// The first `count` (< the batch size) floats at p, zeros in the other lanes, reading nothing past p + count:
/// a masked load (AVX-512, AVX2), else copied lane by lane.
template <class A>
inline fbatch<A> load_first(const float* p, std::size_t count) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1u), p);
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lane));
  }
#endif
  alignas(64) float lanes[fbatch<A>::size] = {};
  for (std::size_t l = 0; l < count; ++l) lanes[l] = p[l];
  return fbatch<A>::load_aligned(lanes);
}

/// Four 32-bit values at p (no alignment needed) held so that quad_lane can broadcast any of them with one
/// in-register shuffle: repeated in every 128-bit lane (AVX-512, AVX2), one register (SSE, NEON). One load
/// and four shuffles instead of four broadcast loads, where a kernel is bound by loads.
template <class A>
inline ubatch<A> load_quad(const std::uint32_t* p) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__SSE2__)
  if constexpr (is_sse<A>) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) return vld1q_u32(p);
#endif
}

/// Value R (0..3) of a load_quad in every lane.
template <class A, int R>
inline ubatch<A> quad_lane(ubatch<A> quad) noexcept {
  static_assert(R >= 0 && R < 4);
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_shuffle_epi32(quad, static_cast<_MM_PERM_ENUM>(R * 0x55));
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) return _mm256_shuffle_epi32(quad, R * 0x55);
#endif
#if defined(__SSE2__)
  if constexpr (is_sse<A>) return _mm_shuffle_epi32(quad, R * 0x55);
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) return vdupq_laneq_u32(quad, R);
#endif
}

/// Asks for the cache line at p ahead of its load (a hint: never faults, does nothing where unsupported).
inline void prefetch_line(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

template <class A>
inline ubatch<A> as_bits(fbatch<A> x) noexcept {
  return xsimd::bitwise_cast<ubatch<A>>(x);
}
// Correctly rounded square root and division on every ISA: xsimd 8.1's float sqrt and division on NEON
// (neon64 included) are reciprocal-estimate approximations, not the IEEE results of the scalar reference.
template <class A>
inline fbatch<A> sqrt_exact(fbatch<A> x) noexcept {
#if defined(__aarch64__)
  if constexpr (!is_avx512<A> && !is_avx<A> && !is_sse<A>) return fbatch<A>(vsqrtq_f32(x.data));
#endif
  return xsimd::sqrt(x);
}
template <class A>
inline fbatch<A> div_exact(fbatch<A> x, fbatch<A> y) noexcept {
#if defined(__aarch64__)
  if constexpr (!is_avx512<A> && !is_avx<A> && !is_sse<A>) return fbatch<A>(vdivq_f32(x.data, y.data));
#endif
  return x / y;
}

template <class A>
inline fbatch<A> as_float(ubatch<A> x) noexcept {
  return xsimd::bitwise_cast<fbatch<A>>(x);
}
/// Exact conversion of lanes known to be below 2^24.
template <class A>
inline fbatch<A> small_uint_to_float(ubatch<A> x) noexcept {
  return xsimd::to_float(xsimd::bitwise_cast<ibatch<A>>(x));
}

/// v, as a value the compiler must take as computed, not loaded: a select between a vector just loaded and
/// zero is otherwise folded into a zero-masked load, and masked loads of memory that streams from DRAM ran
/// 1.6-1.8x slower (batch_norm backward with a fused ReLU on 52 MB arrays, AMD EPYC Zen 5).
template <class A>
inline fbatch<A> unfolded(fbatch<A> v) noexcept {
#if defined(__GNUC__) && (defined(__SSE2__) || defined(__AVX2__) || defined(__AVX512F__))
  if constexpr (is_avx512<A> || is_avx<A> || is_sse<A>) asm("" : "+v"(v.data));
#endif
  return v;
}

}  // namespace
}  // namespace fewmul::simd_compat
