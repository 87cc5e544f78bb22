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
// Every GEMM-like kernel computes each output element as one fixed sequential sum over k = 0..K-1,
// defined by its scalar reference; the SIMD variants vectorize across output columns, block K so that
// a K block continues the accumulator the previous one left, and tile the output in registers, none of
// which changes the order, so all variants (and any tiling, blocking or thread split) agree bit for bit.
// * gemm_f32: acc = fma(a, b, acc), one rounding per step (std::fma in the reference; every ISA uses a
//   fused multiply-add, emulated exactly where the hardware has none).
// * gemm_binary: grouped lookup. K is cut into groups of four; group g adds
//   t = (s0 + s1) + (s2 + s3), s_j = (bit of k = 4g + j ? +a_j : -a_j), with a_j = 0 past K,
//   so acc = acc + t per group: one table of the 16 signed sums of four inputs per row, and one 16-way
//   lookup (vpermps) per 16 outputs replaces four masked adds. Still no multiplication.
// * gemm_ternary: grouped lookup over groups of three, acc = acc + ((v0 + v1) + v2), v_u = nonzero ? ±a_u : +0
//   (+0 past K): a 27-entry table per row and group, one two-source vpermt2ps per 16 outputs.
// * gemm_shift: plain adds of the shifted values in k order, zero terms skipped.
// * gemm_xnor: integer sums, exact in any order.
#include <cstddef>
#include <cstdint>

#include "fewmul/isa.hpp"
#include "fewmul/sample_mode.hpp"

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
/// Cache sizes in bytes (per core for L1 and L2, the share of one core for L3) from which the packed
/// GEMMs derive their K, M and N blocks. detect_cache_sizes() reads the CPU's; tests pass small ones to
/// cross block boundaries on small shapes. Any sizes give the same results, only at another speed.
struct cache_sizes {
  std::size_t l1 = 32 * 1024;
  std::size_t l2 = 512 * 1024;
  std::size_t l3 = 2 * 1024 * 1024;
};
/// The sizes this CPU reports (sysfs cache/index*), each falling back to the default above when absent.
cache_sizes detect_cache_sizes() noexcept;

/// Operands of gemm_f32: C[m,n] = sum_k A(m,k) * B(k,n) with A(m,k) = a[m*a_rs + k*a_cs] and B row-major
/// with row stride ldb, B(k,n) = b[k*ldb + n] (or, with b_transposed, b[n*ldb + k]: a layer's [out][in]
/// weights read in place). `workspace` holds at least kernel_table::workspace_bytes(caches) bytes, 64-byte
/// aligned; the kernel packs A and B into it (it allocates nothing itself).
/// skip_zero_a: A's zeros skip their steps (the reference's `continue`), for an A that is mostly zeros (a
/// pooled layer's output gradient: three in four). Wherever B is finite this gives the same bits as
/// without: a skipped step is fma(0, b, acc) = acc + (±0) = acc, as acc starts at +0 and is never -0.
/// b_rows (instead of b; not with b_transposed): B through an indirection buffer, an implicit im2col:
/// B(k, n) = b_rows[k*ldb + t/b_segment][t % b_segment] with t = b_column + n, ldb pointers per row of B, each
/// to b_segment floats (a convolution's input pixel under one kernel tap, or a buffer of zeros in the padding).
struct gemm_f32_params {
  std::size_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  std::size_t a_rs = 0, a_cs = 0;
  const float* b = nullptr;
  std::size_t ldb = 0;
  const float* const* b_rows = nullptr;
  std::size_t b_segment = 0, b_column = 0;
  bool b_transposed = false;
  bool skip_zero_a = false;
  float* c = nullptr;
  std::size_t ldc = 0;
  cache_sizes caches{};
  void* workspace = nullptr;
};
using gemm_f32_fn = void (*)(const gemm_f32_params& p) noexcept;
/// Operands of gemm_binary: C[m,n] = sum_k A(m,k) * Bb[k,n] with Bb = ±1 from packed bits (row stride ldb
/// words; column 0 at bit 0 of each row's first word). Summed by grouped lookup (see "Summation order").
struct gemm_binary_params {
  std::size_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  std::size_t a_rs = 0, a_cs = 0;
  const std::uint64_t* bits = nullptr;
  std::size_t ldb = 0;
  float* c = nullptr;
  std::size_t ldc = 0;
  cache_sizes caches{};
  void* workspace = nullptr;
};
using gemm_binary_fn = void (*)(const gemm_binary_params& p) noexcept;
/// Operands of gemm_ternary: C[m,n] = sum_k A(m,k) * Bt[k,n] with Bt ternary from the planes sign and
/// nonzero (row stride ldb words). Summed by grouped lookup over groups of three k (see "Summation order").
struct gemm_ternary_params {
  std::size_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  std::size_t a_rs = 0, a_cs = 0;
  const std::uint64_t* sign = nullptr;
  const std::uint64_t* nonzero = nullptr;
  std::size_t ldb = 0;
  float* c = nullptr;
  std::size_t ldc = 0;
  cache_sizes caches{};
  void* workspace = nullptr;
};
using gemm_ternary_fn = void (*)(const gemm_ternary_params& p) noexcept;
/// Operands of gemm_shift, the QBP weight gradient: C(m,n) = sum_k Q(m,k) * B[k,n] with power-of-two codes
/// Q(m,k) = q[m*q_rs + k*q_cs], floats B row-major (row stride ldb) and C(m,n) = c[m*c_rs + n*c_cs] (the
/// layers write the gradient transposed). Each product is an integer add on B's bits (exponent += e,
/// sign ^= s): no multiplication. Terms with a zero code or a zero B are skipped (a zero code skips a
/// whole row of the register tile); the others are added in k order with plain adds. B values below the
/// shift-safe range (magnitude < 2^-shift_safe_exponent: too small to matter) count as zero; a B value
/// above it or not finite sets *b_out_of_range (when given; the results are then unspecified), so the
/// caller needs no separate pass over B to condition it. `list_b` picks which operand's nonzeros drive
/// the loop (false: Q's codes, true: B's floats; a caller lists the operand with fewer or sparser entries
/// per k, e.g. a convolution's gradient after max-pooling); the results are the same bits either way.
/// q_rows (instead of q; q_rs unused): Q through an indirection buffer, a convolution's implicit im2col of its
/// codes: Q(m,k) = q_rows[k*q_cs + t/q_segment][t % q_segment] with t = q_column + m, q_cs pointers per k.
struct gemm_shift_params {
  std::size_t m = 0, n = 0, k = 0;
  const std::int8_t* q = nullptr;
  std::size_t q_rs = 0, q_cs = 0;
  const std::int8_t* const* q_rows = nullptr;
  std::size_t q_segment = 0, q_column = 0;
  const float* b = nullptr;
  std::size_t ldb = 0;
  float* c = nullptr;
  std::size_t c_rs = 0, c_cs = 0;
  bool list_b = false;
  bool* b_out_of_range = nullptr;
  cache_sizes caches{};
  void* workspace = nullptr;
};
using gemm_shift_fn = void (*)(const gemm_shift_params& p) noexcept;
/// Operands of conv_binary, the forward of a binary-weight convolution as an implicit GEMM. The output
/// positions are numbered over `images` channel-last images x [images][height][width][channels] (image
/// stride height*width*channels); for positions p = p0 .. p0 + rows and output channels n:
///   C[p - p0][n] = sum_k X(p, k) * W(k, n),
/// X the im2col matrix of x (k = (ky*kernel + kx)*channels + c, 0 in the zero padding of "same" maps; stride
/// 1) and W(k, n) = +1 where bit n of sign[k*ldb ...] is set, else -1. The sums and their order are
/// gemm_binary's on X, so the results are the same bits; requires channels % 4 == 0 (a group of four k
/// never straddles two taps) and conv_binary_fits().
struct conv_binary_params {
  const float* x = nullptr;
  std::size_t images = 0, height = 0, width = 0, channels = 0, kernel = 0;
  bool same_padding = true;
  std::size_t p0 = 0, rows = 0, n = 0;
  const std::uint64_t* sign = nullptr;
  std::size_t ldb = 0;
  float* c = nullptr;
  std::size_t ldc = 0;
  cache_sizes caches{};
  void* workspace = nullptr;
};
using conv_binary_fn = void (*)(const conv_binary_params& p) noexcept;
/// Whether conv_binary's workspace holds what one row of output positions needs (the per-pixel tables of
/// `kernel` input rows and one panel of weight indices); callers use im2col + gemm_binary otherwise.
bool conv_binary_fits(std::size_t width, std::size_t channels, std::size_t kernel, const cache_sizes& c) noexcept;

/// The optimizer rules update_weights applies (shift-based AdaMax stays in the op layer: AP2 per element).
enum class update_rule : std::uint8_t { sgd, momentum, adam, adamax };
/// Operands of update_weights, one optimizer step over n weights, each result clipped to [lo, hi]
/// (max(w, lo), then min(·, hi): NaN stays NaN; infinite bounds clip nothing). With g the gradient:
///   sgd:      w = clip(w - rate g)
///   momentum: m1 = momentum m1 + g;  w = clip(w - rate m1)
///   adam:     m1 = beta1 m1 + (1 - beta1) g;  m2 = beta2 m2 + ((1 - beta2) g) g;
///             w = clip(w - (rate (m1 / correction1)) / (sqrt(m2 / correction2) + eps))
///   adamax:   m1 as adam;  m2 = max(beta2 m2, |g|);  w = clip(w - rate (m1 / (m2 + eps)))
/// evaluated in exactly this order in single precision (no fused multiply-add), so every ISA gives the
/// same bits. Element-wise: any split of the n weights gives the same results. With g_parts > 1 the
/// gradient is the left fold of g_parts vectors g_stride floats apart, g[i] = (g_0[i] + g_1[i]) + ... +
/// g_{g_parts-1}[i], added in that order: the fold over a minibatch's parts (collective.hpp) in the update's
/// pass, the same bits as folding first.
struct update_weights_params {
  update_rule rule = update_rule::sgd;
  std::size_t n = 0;
  float* w = nullptr;
  const float* g = nullptr;
  std::size_t g_parts = 1, g_stride = 0;
  float* m1 = nullptr;
  float* m2 = nullptr;
  float rate = 0.0f, momentum = 0.0f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float correction1 = 1.0f, correction2 = 1.0f;
  float lo = -1.0f / 0.0f, hi = 1.0f / 0.0f;
};
using update_weights_fn = void (*)(const update_weights_params& p) noexcept;

/// Operands of max_pool_forward / max_pool_backward: 2x2 windows at stride 2 over `images` channel-last maps
/// [height][width][channels], images contiguous (x and dx: height*width*channels floats each, y and dy:
/// (height/2)*(width/2)*channels). A window's candidates are visited in the order (0,0), (0,1), (1,0), (1,1)
/// and a later one wins only when strictly greater: the first maximum on ties, and a NaN never wins (a NaN
/// in the first place stays). forward: y = the winner's value. backward: dx = dy at each window's winner,
/// 0 at the other three, and 0 in an odd map's last row and column (inputs no window reads). Comparisons
/// and selects only: every ISA gives the same bits, and any split of the images the same results.
struct max_pool_params {
  std::size_t images = 0, height = 0, width = 0, channels = 0;
  const float* x = nullptr;
  float* y = nullptr;         ///< forward output
  const float* dy = nullptr;  ///< backward: the gradient of y
  float* dx = nullptr;        ///< backward output: the gradient of x
};
using max_pool_fn = void (*)(const max_pool_params& p) noexcept;

/// The column sums batch_norm_sums takes, with d = x - mean[f] for the values x of feature f.
enum class batch_norm_sum : std::uint8_t {
  values,         ///< sums[f] = sum of x (the mean's numerator)
  squares,        ///< sums[f] = sum of d * d (the variance's numerator)
  shift_squares,  ///< sums[f] = sum of d * ap2(d) (shift-based batch norm, Hubara et al. Algorithm 3)
  gradients       ///< sums[f] = sum of dy * (d * inv_std[f]) (gamma's gradient); sums[second + f] = sum of dy
};
/// Operands of the batch-norm kernels over a block of `rows` rows x `features` features, row stride `ld`
/// floats (x, dy and out point at the block's first value; the per-feature arrays at its first feature):
///   batch_norm_forward:  out = gamma[f] * ((x - mean[f]) * inv_std[f]) + beta[f]
///   batch_norm_inference: out = (gamma[f] * (x - mean[f])) * inv_std[f] + beta[f] (the order inference with
///                        the running statistics has always used, packed inference included)
///   batch_norm_sums:     the `sum` of each feature's values over the rows, as listed at batch_norm_sum
///   batch_norm_backward: out = ((gamma[f] * inv_std[f]) / count) *
///                              ((count * dy - beta_grad[f]) - ((x - mean[f]) * inv_std[f]) * gamma_grad[f])
/// evaluated in exactly this order in single precision (no fused multiply-add). With `relu` (a ReLU fused
/// after the batch norm): forward and inference write y > 0 ? y : +0 for each value y above; the gradient sums
/// and backward take dy from the ReLU's output and use (y > 0 ? dy : +0) in place of dy, y being the forward
/// value gamma[f] * ((x - mean[f]) * inv_std[f]) + beta[f] recomputed in the same order (so the same bits as
/// the two layers apart). Each sum starts from +0 and adds its rows' terms in row order, so every ISA gives the
/// same bits; the element-wise passes give the same results for any split of the block, the sums for any
/// split of the features.
struct batch_norm_params {
  std::size_t rows = 0, features = 0, ld = 0;
  const float* x = nullptr;
  const float* dy = nullptr;  ///< sums (gradients) and backward: the gradient of the layer's output
  float* out = nullptr;       ///< forward: the output; backward: the gradient of x
  const float* mean = nullptr;
  const float* inv_std = nullptr;
  const float* gamma = nullptr;  ///< the scale the forward pass applies (AP2-rounded when shift-based)
  const float* beta = nullptr;
  const float* gamma_grad = nullptr;
  const float* beta_grad = nullptr;
  float count = 1.0f;  ///< values per feature over the whole minibatch
  bool relu = false;   ///< a ReLU follows (see above); gradients sums and backward then also read gamma, beta
  batch_norm_sum sum = batch_norm_sum::values;
  float* sums = nullptr;
  std::size_t second = 0;  ///< gradients: offset of the sums of dy in `sums`
};
using batch_norm_fn = void (*)(const batch_norm_params& p) noexcept;

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
/// k_bits must be 0 in both (they then XOR to 0 and count nothing). Integer sums: exact in any order.
struct gemm_xnor_params {
  std::size_t m = 0, n = 0, k_words = 0;
  std::int32_t k_bits = 0;
  const std::uint64_t* a = nullptr;
  std::size_t lda = 0;
  const std::uint64_t* bt = nullptr;
  std::size_t ldbt = 0;
  std::int32_t* c = nullptr;
  std::size_t ldc = 0;
};
using gemm_xnor_fn = void (*)(const gemm_xnor_params& p) noexcept;

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
  conv_binary_fn conv_binary;
  update_weights_fn update_weights;
  max_pool_fn max_pool_forward;
  max_pool_fn max_pool_backward;
  batch_norm_fn batch_norm_forward;
  batch_norm_fn batch_norm_inference;
  batch_norm_fn batch_norm_sums;
  batch_norm_fn batch_norm_backward;
  /// Column tile of the GEMM kernels: layers split work at multiples of 64 columns and this.
  std::size_t column_tile;
  /// Bytes of workspace the packed GEMMs (f32, binary, ternary, shift) need for these cache sizes.
  std::size_t (*workspace_bytes)(const cache_sizes& caches) noexcept;
};

/// The plain scalar reference kernels.
const kernel_table& reference_kernels();
/// The kernels for `which`; throws fewmul::error when it is not supported here.
const kernel_table& kernels_for(fewmul::isa which);
/// The kernels of fewmul::active_isa().
const kernel_table& active_kernels();

/// Transposes a rows x cols bit matrix (row stride ldi words) into cols x rows (row stride ldo words),
/// keeping padding bits 0.
void transpose_bits(const std::uint64_t* in, std::size_t rows, std::size_t cols, std::size_t ldi, std::uint64_t* out,
                    std::size_t ldo) noexcept;
/// Value of a power-of-two code as a float (for tests and inspection).
float pow2_code_value(std::int8_t code) noexcept;
/// AP2(v), the power of two nearest to v in the log domain, with v's sign (Hubara et al.): 2^round(log2 |v|),
/// halves rounding up; 0, infinities and NaN stay as they are. fewmul::ap2 is this function.
float ap2(float v) noexcept;

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
