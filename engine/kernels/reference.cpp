// Plain scalar reference of every kernel: the specification the SIMD variants are tested against.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "fewmul/kernels.hpp"

namespace fewmul::kernels {
namespace {

std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// Uniform integer in [0, 2^23) for element `index`.
std::uint32_t uniform23(std::uint64_t key, std::uint32_t index) { return counter_hash(key, index) >> 9; }

bool sample_binary(float w, sample_mode mode, std::uint64_t key, std::uint32_t index) {
  if (mode == sample_mode::deterministic) return w >= 0.0f;
  // P(+1) = (w+1)/2: compare a 23-bit uniform with (w+1) * 2^22 (exact scaling by a power of two).
  return static_cast<float>(uniform23(key, index)) < (w + 1.0f) * 4194304.0f;
}

bool sample_nonzero(float w, sample_mode mode, std::uint64_t key, std::uint32_t index) {
  const float a = std::fabs(w);
  if (mode == sample_mode::deterministic) return a >= 0.5f;
  return static_cast<float>(uniform23(key, index)) < a * 8388608.0f;
}

void pack_binary_ref(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw, std::uint64_t* bits,
                     std::size_t ldb, sample_mode mode, std::uint64_t key) noexcept {
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t word = 0; word < words_for(cols); ++word) bits[r * ldb + word] = 0;
    for (std::size_t c = 0; c < cols; ++c) {
      const auto index = static_cast<std::uint32_t>(r * ldw + c);
      if (sample_binary(w[r * ldw + c], mode, key, index)) bits[r * ldb + c / 64] |= std::uint64_t{1} << (c % 64);
    }
  }
}

void pack_ternary_ref(const float* w, std::size_t rows, std::size_t cols, std::size_t ldw, std::uint64_t* sign,
                      std::uint64_t* nonzero, std::size_t ldb, sample_mode mode, std::uint64_t key) noexcept {
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t word = 0; word < words_for(cols); ++word) sign[r * ldb + word] = nonzero[r * ldb + word] = 0;
    for (std::size_t c = 0; c < cols; ++c) {
      const float v = w[r * ldw + c];
      const auto index = static_cast<std::uint32_t>(r * ldw + c);
      if (!sample_nonzero(v, mode, key, index)) continue;
      const std::uint64_t bit = std::uint64_t{1} << (c % 64);
      nonzero[r * ldb + c / 64] |= bit;
      if (v > 0.0f) sign[r * ldb + c / 64] |= bit;
    }
  }
}

bool bit_at(const std::uint64_t* bits, std::size_t ldb, std::size_t r, std::size_t c) {
  return (bits[r * ldb + c / 64] >> (c % 64)) & 1u;
}

void gemm_f32_ref(const gemm_f32_params& p) noexcept {
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::size_t q = 0; q < p.k; ++q) acc = std::fma(p.a[i * p.a_rs + q * p.a_cs], p.b[q * p.ldb + j], acc);
      p.c[i * p.ldc + j] = acc;
    }
}

// Groups of four k: t = (s0 + s1) + (s2 + s3) with s_u = ±a_u by the weight bit, -0 past K (a_u = 0, bit 0).
void gemm_binary_ref(const gemm_binary_params& p) noexcept {
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::size_t q0 = 0; q0 < p.k; q0 += 4) {
        float s[4];
        for (std::size_t u = 0; u < 4; ++u) {
          const std::size_t q = q0 + u;
          if (q >= p.k) {
            s[u] = -0.0f;
            continue;
          }
          const float v = p.a[i * p.a_rs + q * p.a_cs];
          s[u] = bit_at(p.bits, p.ldb, q, j) ? v : -v;
        }
        acc = acc + ((s[0] + s[1]) + (s[2] + s[3]));
      }
      p.c[i * p.ldc + j] = acc;
    }
}

// Groups of three k: acc = acc + ((v0 + v1) + v2), v_u = nonzero ? (sign ? a_u : -a_u) : +0, +0 past K.
void gemm_ternary_ref(const gemm_ternary_params& p) noexcept {
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::size_t q0 = 0; q0 < p.k; q0 += 3) {
        float v[3] = {0.0f, 0.0f, 0.0f};
        for (std::size_t u = 0; u < 3 && q0 + u < p.k; ++u) {
          const std::size_t q = q0 + u;
          if (!bit_at(p.nonzero, p.ldb, q, j)) continue;
          const float a = p.a[i * p.a_rs + q * p.a_cs];
          v[u] = bit_at(p.sign, p.ldb, q, j) ? a : -a;
        }
        acc = acc + ((v[0] + v[1]) + v[2]);
      }
      p.c[i * p.ldc + j] = acc;
    }
}

void gemm_shift_ref(const gemm_shift_params& p) noexcept {
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::size_t q = 0; q < p.k; ++q) {
        const int code = p.q[i * p.q_rs + q * p.q_cs];
        const float v = p.b[q * p.ldb + j];
        if (v == 0.0f || code == 0) continue;
        const float scaled = std::ldexp(v, (code < 0 ? -code : code) - pow2_code_bias);
        acc += code < 0 ? -scaled : scaled;
      }
      p.c[i * p.c_rs + j * p.c_cs] = acc;
    }
}

void gemm_xnor_ref(const gemm_xnor_params& p) noexcept {
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      std::int32_t different = 0;
      for (std::size_t w = 0; w < p.k_words; ++w) {
        const std::uint64_t x = p.a[i * p.lda + w] ^ p.bt[w * p.ldbt + j];
        for (int bit = 0; bit < 64; ++bit) different += static_cast<std::int32_t>((x >> bit) & 1u);
      }
      p.c[i * p.ldc + j] = p.k_bits - 2 * different;
    }
}

void quantize_pow2_ref(const float* x, std::size_t n, std::int8_t* codes, int kmin, int kmax, std::uint64_t key,
                       std::uint32_t index0) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t bits = float_bits(x[i]) & 0x7fffffffu;
    const bool negative = x[i] < 0.0f;
    const std::uint32_t u = uniform23(key, static_cast<std::uint32_t>(index0 + i));
    const int exponent = static_cast<int>(bits >> 23) - 127;  // floor(log2|x|) for normal |x|
    int k;
    bool zero = false;
    if (bits == 0) {
      zero = true;
      k = 0;
    } else if (exponent >= kmax) {
      k = kmax;
    } else if (exponent >= kmin) {
      // |x| = 2^e (1 + f) with f = mantissa / 2^23; round up with probability f.
      k = exponent + (u < (bits & 0x7fffffu) ? 1 : 0);
    } else {
      // |x| < 2^kmin: 2^kmin with probability |x| / 2^kmin, compared on the 2^23 scale.
      const float threshold = std::ldexp(std::fabs(x[i]), 23 - kmin);
      k = kmin;
      zero = !(static_cast<float>(u) < threshold);
    }
    codes[i] = zero ? std::int8_t{0} : static_cast<std::int8_t>(negative ? -(k + pow2_code_bias) : k + pow2_code_bias);
  }
}

std::size_t no_workspace_bytes(const cache_sizes&) noexcept { return 0; }

}  // namespace

const kernel_table& reference_kernels() {
  static const kernel_table table{fewmul::isa::scalar, pack_binary_ref, pack_ternary_ref,  gemm_f32_ref,
                                  gemm_binary_ref,     gemm_ternary_ref, gemm_shift_ref,    quantize_pow2_ref,
                                  gemm_xnor_ref,       1,                no_workspace_bytes};
  return table;
}

void pack_levels(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, int bits, std::uint64_t* planes,
                 std::size_t plane_stride, std::size_t ldb) noexcept {
  const std::size_t words = words_for(cols);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t w = 0; w < words; ++w) {
      std::uint64_t word[8] = {};
      const std::size_t c1 = std::min(cols, w * 64 + 64);
      for (std::size_t c = w * 64; c < c1; ++c) {
        const std::uint32_t u = level_of(x[r * ldx + c], bits);
        for (int i = 0; i < bits; ++i) word[i] |= static_cast<std::uint64_t>((u >> i) & 1u) << (c % 64);
      }
      for (int i = 0; i < bits; ++i) planes[static_cast<std::size_t>(i) * plane_stride + r * ldb + w] = word[i];
    }
}

float pow2_code_value(std::int8_t code) noexcept {
  if (code == 0) return 0.0f;
  const int c = code;
  const float magnitude = std::ldexp(1.0f, (c < 0 ? -c : c) - pow2_code_bias);
  return c < 0 ? -magnitude : magnitude;
}

}  // namespace fewmul::kernels
