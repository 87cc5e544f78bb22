#pragma once
// The one xsimd template behind every SIMD kernel variant. Each kernels_<isa>.cpp instantiates it for
// its own xsimd architecture and is compiled with only that ISA's flags.
//
// GEMM kernels tile the output into MR rows x NV vectors of columns held in registers (single-vector
// tiles where NV no longer fit) and run the whole k loop per tile, in order, so every output is the same
// sequential sum as the reference. Columns that do not fill a vector are done by a scalar loop with the
// same summation order.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fewmul/kernels.hpp"
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

  // ---- float GEMM (the fp32 path) ------------------------------------------------------------------
  static void gemm_f32(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                       std::size_t a_cs, const float* b, std::size_t ldb, float* c, std::size_t ldc) noexcept {
    auto tile = [&]<std::size_t R, std::size_t V>(std::size_t i0, std::size_t j0) {
      fb acc[R][V];
      zero_tile(acc);
      for (std::size_t p = 0; p < k; ++p) {
        fb bv[V];
        for (std::size_t v = 0; v < V; ++v) bv[v] = fb::load_unaligned(b + p * ldb + j0 + v * lanes);
        for (std::size_t r = 0; r < R; ++r) {
          const fb av(a[(i0 + r) * a_rs + p * a_cs]);
          for (std::size_t v = 0; v < V; ++v) acc[r][v] = acc[r][v] + av * bv[v];
        }
      }
      store_tile(acc, c + i0 * ldc + j0, ldc);
    };
    auto column = [&](std::size_t i, std::size_t j) {
      float acc = 0.0f;
      for (std::size_t p = 0; p < k; ++p) {
        const float product = a[i * a_rs + p * a_cs] * b[p * ldb + j];
        acc = acc + product;
      }
      c[i * ldc + j] = acc;
    };
    for_each_tile(m, n, tile, column);
  }

  // ---- masked-add GEMMs over packed weights -------------------------------------------------------
  static std::uint64_t tile_bits(const std::uint64_t* row, std::size_t j0) {
    return row[j0 / 64] >> (j0 % 64);
  }

  static void gemm_binary(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                          std::size_t a_cs, const float* a_rowsum, const std::uint64_t* bits, std::size_t ldb,
                          float* c, std::size_t ldc) noexcept {
    auto tile = [&]<std::size_t R, std::size_t V>(std::size_t i0, std::size_t j0) {
      fb acc[R][V];
      zero_tile(acc);
      for (std::size_t p = 0; p < k; ++p) {
        const std::uint64_t chunk = tile_bits(bits + p * ldb, j0);
        fm plus[V];
        for (std::size_t v = 0; v < V; ++v)
          plus[v] = simd_compat::mask_from_bits<A>(static_cast<std::uint32_t>(chunk >> (v * lanes)) & lane_mask);
        for (std::size_t r = 0; r < R; ++r) {
          const fb av(a[(i0 + r) * a_rs + p * a_cs]);
          for (std::size_t v = 0; v < V; ++v) acc[r][v] = xsimd::select(plus[v], acc[r][v] + av, acc[r][v]);
        }
      }
      for (std::size_t r = 0; r < R; ++r) {
        const fb rowsum(a_rowsum[i0 + r]);
        for (std::size_t v = 0; v < V; ++v)
          ((acc[r][v] + acc[r][v]) - rowsum).store_unaligned(c + (i0 + r) * ldc + j0 + v * lanes);
      }
    };
    auto column = [&](std::size_t i, std::size_t j) {
      float positive = 0.0f;
      for (std::size_t p = 0; p < k; ++p)
        if ((bits[p * ldb + j / 64] >> (j % 64)) & 1u) positive += a[i * a_rs + p * a_cs];
      c[i * ldc + j] = (positive + positive) - a_rowsum[i];
    };
    for_each_tile(m, n, tile, column);
  }

  static void gemm_ternary(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                           std::size_t a_cs, const std::uint64_t* sign, const std::uint64_t* nonzero,
                           std::size_t ldb, float* c, std::size_t ldc) noexcept {
    auto tile = [&]<std::size_t R, std::size_t V>(std::size_t i0, std::size_t j0) {
      fb acc[R][V];
      zero_tile(acc);
      for (std::size_t p = 0; p < k; ++p) {
        const std::uint64_t s = tile_bits(sign + p * ldb, j0);
        const std::uint64_t neg = tile_bits(nonzero + p * ldb, j0) ^ s;  // sign ⊆ nonzero
        fm plus[V], minus[V];
        for (std::size_t v = 0; v < V; ++v) {
          plus[v] = simd_compat::mask_from_bits<A>(static_cast<std::uint32_t>(s >> (v * lanes)) & lane_mask);
          minus[v] = simd_compat::mask_from_bits<A>(static_cast<std::uint32_t>(neg >> (v * lanes)) & lane_mask);
        }
        for (std::size_t r = 0; r < R; ++r) {
          const fb av(a[(i0 + r) * a_rs + p * a_cs]);
          for (std::size_t v = 0; v < V; ++v) {
            acc[r][v] = xsimd::select(plus[v], acc[r][v] + av, acc[r][v]);
            acc[r][v] = xsimd::select(minus[v], acc[r][v] - av, acc[r][v]);
          }
        }
      }
      store_tile(acc, c + i0 * ldc + j0, ldc);
    };
    auto column = [&](std::size_t i, std::size_t j) {
      float acc = 0.0f;
      for (std::size_t p = 0; p < k; ++p) {
        if (!((nonzero[p * ldb + j / 64] >> (j % 64)) & 1u)) continue;
        const float v = a[i * a_rs + p * a_cs];
        if ((sign[p * ldb + j / 64] >> (j % 64)) & 1u)
          acc += v;
        else
          acc -= v;
      }
      c[i * ldc + j] = acc;
    };
    for_each_tile(m, n, tile, column);
  }

  // ---- shift GEMM (quantized-backprop weight gradient) --------------------------------------------
  // A product a * (±2^e) is the integer add  bits(a) + (e << 23) + (s << 31): the first term moves the
  // exponent field by e (no carry out while the result stays normal, which the caller's range on A
  // guarantees), the second flips the sign bit (adding 2^31 modulo 2^32 is an XOR of bit 31).
  static float shift_scalar(float v, int code) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    const int magnitude = code < 0 ? -code : code;
    bits += static_cast<std::uint32_t>(magnitude - pow2_code_bias) << 23;
    bits += code < 0 ? 0x80000000u : 0u;
    float out;
    std::memcpy(&out, &bits, 4);
    return out;
  }

  static void gemm_shift(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t a_rs,
                         std::size_t a_cs, const std::int8_t* q, std::size_t ldq, float* c, std::size_t ldc) noexcept {
    auto tile = [&]<std::size_t R, std::size_t V>(std::size_t i0, std::size_t j0) {
      fb acc[R][V];
      zero_tile(acc);
      for (std::size_t p = 0; p < k; ++p) {
        fm nonzero[V];
        ub addend[V];
        for (std::size_t v = 0; v < V; ++v) {
          const ib code = simd_compat::load_i8_as_i32<A>(q + p * ldq + j0 + v * lanes);
          nonzero[v] = xsimd::to_float(code) != fb(0.0f);
          const ub sign_bit = xsimd::bitwise_cast<ub>(code) & ub(0x80000000u);
          const ub exponent = xsimd::bitwise_cast<ub>(xsimd::abs(code) - ib(pow2_code_bias));
          addend[v] = (exponent << 23) + sign_bit;
        }
        for (std::size_t r = 0; r < R; ++r) {
          const float v_a = a[(i0 + r) * a_rs + p * a_cs];
          if (v_a == 0.0f) continue;
          std::uint32_t a_bits;
          std::memcpy(&a_bits, &v_a, 4);
          const ub ab(a_bits);
          for (std::size_t v = 0; v < V; ++v)
            acc[r][v] = xsimd::select(nonzero[v], acc[r][v] + simd_compat::as_float<A>(ab + addend[v]), acc[r][v]);
        }
      }
      store_tile(acc, c + i0 * ldc + j0, ldc);
    };
    auto column = [&](std::size_t i, std::size_t j) {
      float acc = 0.0f;
      for (std::size_t p = 0; p < k; ++p) {
        const float v = a[i * a_rs + p * a_cs];
        const int code = q[p * ldq + j];
        if (v == 0.0f || code == 0) continue;
        acc += shift_scalar(v, code);
      }
      c[i * ldc + j] = acc;
    };
    for_each_tile(m, n, tile, column);
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

  static void gemm_xnor(std::size_t m, std::size_t n, std::size_t k_words, std::int32_t k_bits, const std::uint64_t* a,
                        std::size_t lda, const std::uint64_t* bt, std::size_t ldbt, std::int32_t* c,
                        std::size_t ldc) noexcept {
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
    return kernel_table{which,         &pack_binary, &pack_ternary,  &gemm_f32,  &gemm_binary,
                        &gemm_ternary, &gemm_shift,  &quantize_pow2, &gemm_xnor, nr};
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
