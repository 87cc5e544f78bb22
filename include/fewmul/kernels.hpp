#pragma once
// Low-level kernels: pure functions over pointers and strides. They allocate nothing, throw nothing
// and start no threads; the layers in fewmul/network.hpp own shapes, validation, threads and memory.
//
// Bit convention (one for the whole engine)
// -----------------------------------------
// A packed bit matrix has `rows` rows of ceil(cols/64) uint64_t words (a row stride `ldb` in words may
// be larger). Column c of row r lives in word r*ldb + c/64 at bit (c % 64), least significant bit first.
// * Binary weights: bit 1 means +1, bit 0 means -1.
// * Ternary weights: two planes of the same shape. Plane `sign` has bit 1 for +1; plane `nonzero` has
//   bit 1 for a non-zero value. Invariant: sign ⊆ nonzero, so value = nonzero ? (sign ? +1 : -1) : 0.
// * Padding bits (columns >= cols in the last word) are always 0 in every plane.
//
// Power-of-two codes (quantized layer inputs, "QBP")
// --------------------------------------------------
// A quantized input is an int8 code: 0 means the value 0; otherwise the value is
// sign(code) * 2^(|code| - pow2_code_bias), so exponents -15..15 are representable.
//
// Summation order
// ---------------
// Every GEMM-like kernel computes each output element as one sequential sum over k = 0..K-1 with
// plain (non-fused) adds, exactly as its scalar reference does. The SIMD variants vectorize across
// output columns only, so all variants (and any tiling or thread split of the outputs) agree bit for bit.
#include <cstddef>
#include <cstdint>

#include "fewmul/isa.hpp"

namespace fewmul::kernels {

/// Words needed for one packed row of `cols` bits.
constexpr std::size_t words_for(std::size_t cols) { return (cols + 63) / 64; }

/// Bias of the int8 power-of-two codes: value = sign(code) * 2^(|code| - pow2_code_bias).
constexpr int pow2_code_bias = 16;
/// Exponent range a code can hold; quantizer ranges must lie inside it.
constexpr int pow2_min_exponent = -15;
constexpr int pow2_max_exponent = 15;
/// gemm_shift needs every A value to be 0 or of magnitude within [2^-shift_safe_exponent,
/// 2^shift_safe_exponent], so that adding any code exponent keeps the result a normal float.
constexpr int shift_safe_exponent = 110;

/// How to sample weights from real-valued master weights.
enum class sample_mode : std::uint8_t {
  deterministic,  ///< binary: w >= 0 -> +1; ternary: |w| >= 0.5 -> sign(w), else 0
  stochastic      ///< binary: P(+1) = clip((w+1)/2, 0, 1); ternary: P(sign(w)) = min(|w|, 1), else 0
};

/// Counter-based random numbers: hash of (key, index). Identical in every kernel variant, so results
/// do not depend on ISA, tiling or thread scheduling.
constexpr std::uint32_t fmix32(std::uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}
constexpr std::uint32_t counter_hash(std::uint64_t key, std::uint32_t index) {
  return fmix32(fmix32(index ^ static_cast<std::uint32_t>(key)) + static_cast<std::uint32_t>(key >> 32));
}
/// Derives a kernel key from a run seed and up to three counters (step, layer, purpose).
constexpr std::uint64_t derive_key(std::uint64_t seed, std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0) {
  auto splitmix = [](std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  return splitmix(splitmix(splitmix(splitmix(seed) ^ a) ^ b) ^ c);
}

/// Packs rows x cols floats (row stride ldw) into binary bits (row stride ldb words).
/// The random index of element (r, c) is r*ldw + c.
using pack_binary_fn = void (*)(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw,
                                std::uint64_t* bits, std::size_t ldb, sample_mode mode, std::uint64_t key) noexcept;
/// Packs rows x cols floats into the ternary planes `sign` and `nonzero` (same row stride ldb).
using pack_ternary_fn = void (*)(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw,
                                 std::uint64_t* sign, std::uint64_t* nonzero, std::size_t ldb, sample_mode mode,
                                 std::uint64_t key) noexcept;
/// C[m,n] = sum_k A(m,k) * B[k,n]; A(m,k) = a[m*a_rs + k*a_cs]; B row-major with row stride ldb.
using gemm_f32_fn = void (*)(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                             std::size_t a_cs, const float* b, std::size_t ldb, float* c, std::size_t ldc) noexcept;
/// C[m,n] = sum_k A(m,k) * Bb[k,n] with Bb = ±1 from packed bits (row stride ldb words).
/// Computed with masked adds only: P = sum over set bits of A(m,k), then C = 2P - a_rowsum[m], where
/// a_rowsum[m] = sum_k A(m,k) (see row_sums). Derivation: sum_k s_k a_k = sum_{s=+1} a - sum_{s=-1} a
/// = P - (R - P) = 2P - R.
using gemm_binary_fn = void (*)(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                                std::size_t a_cs, const float* a_rowsum, const std::uint64_t* bits, std::size_t ldb,
                                float* c, std::size_t ldc) noexcept;
/// C[m,n] = sum_k A(m,k) * Bt[k,n], Bt ternary from planes sign/nonzero: masked add where +1,
/// masked subtract where -1.
using gemm_ternary_fn = void (*)(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                                 std::size_t a_cs, const std::uint64_t* sign, const std::uint64_t* nonzero,
                                 std::size_t ldb, float* c, std::size_t ldc) noexcept;
/// C[m,n] = sum_k A(m,k) * Q[k,n] where Q holds power-of-two codes (row stride ldq). Each product is an
/// integer add on the float's bits (exponent += e, sign ^= s): no multiplication. A values must be 0 or
/// within the shift-safe range (see shift_safe_exponent).
using gemm_shift_fn = void (*)(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                               std::size_t a_cs, const std::int8_t* q, std::size_t ldq, float* c,
                               std::size_t ldc) noexcept;
/// Stochastic power-of-two rounding of n floats into codes with E[value(code)] = x for |x| <= 2^kmax:
/// |x| in [2^e, 2^(e+1)) goes to 2^(e+1) with probability |x|/2^e - 1, else 2^e; |x| < 2^kmin goes to
/// 2^kmin with probability |x|/2^kmin, else 0; |x| >= 2^kmax saturates at 2^kmax; 0 stays 0.
/// Requires pow2_min_exponent <= kmin <= kmax <= pow2_max_exponent and finite x.
/// The random index of element i is index0 + i.
using quantize_pow2_fn = void (*)(const float* x, std::size_t n, std::int8_t* codes, int kmin, int kmax,
                                  std::uint64_t key, std::uint32_t index0) noexcept;

/// XNOR-popcount GEMM of ±1 matrices held as bits (1 = +1): C[m,n] = sum_k A[m,k] * B[k,n]
///   = k_bits - 2 * sum_w popcount(a[m][w] XOR bt[w][n]),
/// since each equal bit pair contributes +1 and each differing pair -1 (K - 2 * differences).
/// A is packed along k ([m][k_words], row stride lda words); B is given word-interleaved, bt[w][n] is
/// word w of column n (row stride ldbt), so one vector load covers several columns. Padding bits past
/// k_bits must be 0 in both (they then XOR to 0 and count nothing).
using gemm_xnor_fn = void (*)(std::size_t m, std::size_t n, std::size_t k_words, std::int32_t k_bits,
                              const std::uint64_t* a, std::size_t lda, const std::uint64_t* bt, std::size_t ldbt,
                              std::int32_t* c, std::size_t ldc) noexcept;

/// One set of kernels for one ISA.
struct kernel_table {
  fewmul::isa isa;
  pack_binary_fn pack_binary;
  pack_ternary_fn pack_ternary;
  gemm_f32_fn gemm_f32;
  gemm_binary_fn gemm_binary;
  gemm_ternary_fn gemm_ternary;
  gemm_shift_fn gemm_shift;
  quantize_pow2_fn quantize_pow2;
  gemm_xnor_fn gemm_xnor;
  /// Column tile of the GEMM kernels: layers split work at multiples of 64 columns and this.
  std::size_t column_tile;
};

/// The plain scalar reference kernels.
const kernel_table& reference_kernels();
/// The kernels for `which`; throws fewmul::error when it is not supported here.
const kernel_table& kernels_for(fewmul::isa which);
/// The kernels of fewmul::active_isa().
const kernel_table& active_kernels();

/// out[r] = sum_c A(r,c) in sequential order (the a_rowsum input of gemm_binary).
void row_sums(const float* a, std::size_t rows, std::size_t cols, std::size_t a_rs, std::size_t a_cs, float* out) noexcept;
/// Transposes a rows x cols bit matrix (row stride ldi words) into cols x rows (row stride ldo words),
/// keeping padding bits 0.
void transpose_bits(const std::uint64_t* in, std::size_t rows, std::size_t cols, std::size_t ldi, std::uint64_t* out,
                    std::size_t ldo) noexcept;
/// Value of a power-of-two code as a float (for tests and inspection).
float pow2_code_value(std::int8_t code) noexcept;

// k-bit levels (QNN weights and activations)
// ------------------------------------------
// A k-bit value is one of the 2^k levels (2u - L)/L, u = 0..L, L = 2^k - 1 (for k = 1: ±1). Its bit
// planes are the bits of u: plane i holds bit i of u (bit 1 = +1 in the ±1 reading of the plane), and
// 2u - L = sum_i 2^i (2 b_i - 1), so a k-bit value is sum_i 2^i p_i / L with p_i = ±1 planes. A dot
// product of a k_a-bit vector and a k_w-bit vector is then
//   L_a L_w sum_k a_k w_k = sum_i sum_j 2^(i+j) xnor_dot(plane_i(a), plane_j(w)),
// one XNOR-popcount GEMM per pair of planes (gemm_xnor).

/// Level u in 0..L of v: the nearest level, u = clamp(floor((v + 1)/2 * L + 1/2), 0, L); for one bit
/// u = (v >= 0), exactly the sign activation. NaN gives 0.
inline std::uint32_t level_of(float v, int bits) noexcept {
  if (bits == 1) return v >= 0.0f ? 1u : 0u;
  const float top = static_cast<float>((1u << bits) - 1u);
  const float c = v >= -1.0f ? (v <= 1.0f ? v : 1.0f) : -1.0f;
  const float t = (c + 1.0f) * 0.5f * top + 0.5f;
  const auto u = static_cast<std::uint32_t>(t);  // t >= 0.5, so truncation is floor
  return u > (1u << bits) - 1u ? (1u << bits) - 1u : u;
}
/// The value (2u - L)/L of level u.
inline float level_value(std::uint32_t u, int bits) noexcept {
  const int top = (1 << bits) - 1;
  return static_cast<float>(2 * static_cast<int>(u) - top) / static_cast<float>(top);
}
/// Bit planes of the levels of rows x cols values (row stride ldx): plane i of row r is written at
/// planes + i * plane_stride + r * ldb (ldb >= words_for(cols)); padding bits are 0.
void pack_levels(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, int bits, std::uint64_t* planes,
                 std::size_t plane_stride, std::size_t ldb) noexcept;

}  // namespace fewmul::kernels
