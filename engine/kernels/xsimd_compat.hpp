#pragma once
// The few operations xsimd 8.1 lacks (or spells differently in later versions), in one place:
// lane masks from/to bit fields, int8 -> int32 widening loads, and float <-> int reinterpretation.
// Each ISA's translation unit includes this with only its own ISA enabled, so the #if guards pick
// the intrinsics that unit may use.
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
  alignas(64) static constexpr std::uint32_t lane_bits[16] = {1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,
                                                              1u << 6,  1u << 7,  1u << 8,  1u << 9,  1u << 10, 1u << 11,
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

/// Loads batch-size int8 values and sign-extends them to int32 lanes.
template <class A>
inline ibatch<A> load_i8_as_i32(const std::int8_t* p) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_avx512<A>) return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse<A>) {
    std::int32_t word;
    std::memcpy(&word, p, 4);
    return _mm_cvtepi8_epi32(_mm_cvtsi32_si128(word));
  }
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) {
    std::int32_t word;
    std::memcpy(&word, p, 4);
    const int8x8_t bytes = vreinterpret_s8_s32(vdup_n_s32(word));
    return vmovl_s16(vget_low_s16(vmovl_s8(bytes)));
  }
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
    const __m512i counts = _mm512_add_epi8(_mm512_shuffle_epi8(table, _mm512_and_si512(x.data, low)),
                                           _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(x.data, 4), low)));
    return _mm512_sad_epu8(counts, _mm512_setzero_si512());
  }
#endif
#if defined(__AVX2__)
  if constexpr (is_avx<A>) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                           2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i counts = _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(x.data, low)),
                                           _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x.data, 4), low)));
    return _mm256_sad_epu8(counts, _mm256_setzero_si256());
  }
#endif
#if defined(__SSE4_2__)
  if constexpr (is_sse<A>) {
    return _mm_set_epi64x(static_cast<long long>(_mm_popcnt_u64(static_cast<std::uint64_t>(_mm_extract_epi64(x.data, 1)))),
                          static_cast<long long>(_mm_popcnt_u64(static_cast<std::uint64_t>(_mm_cvtsi128_si64(x.data)))));
  }
#endif
#if defined(__aarch64__)
  if constexpr (std::is_base_of_v<xsimd::neon, A>) return vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u64(x.data)))));
#endif
}

template <class A>
inline ubatch<A> as_bits(fbatch<A> x) noexcept {
  return xsimd::bitwise_cast<ubatch<A>>(x);
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

}  // namespace
}  // namespace fewmul::simd_compat
