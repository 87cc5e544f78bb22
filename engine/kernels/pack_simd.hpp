#pragma once
// pack_binary, pack_ternary: float weights to bit planes (contract in fewmul/kernels.hpp).
#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct pack_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lane_mask;
  using base::lanes;
  using base::uniform23;
  using typename base::fb;
  using typename base::fm;

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
      const auto row_index = static_cast<std::uint32_t>(r * ldw);
      // Each 64-bit word is gathered in a register and stored once: or-ing every vector's bits into memory made
      // each store wait for the previous one through store-to-load forwarding.
      std::uint64_t word = 0;
      for (std::size_t c = 0; c < full; c += lanes) {
        const fm m = binary_bits(fb::load_unaligned(src + c), mode, key, row_index + static_cast<std::uint32_t>(c));
        word |= std::uint64_t{simd_compat::bits_from_mask<A>(m)} << (c % 64);
        if ((c + lanes) % 64 == 0) {
          dst[c / 64] = word;
          word = 0;
        }
      }
      if (full < cols) {
        alignas(64) float tail[lanes] = {};
        for (std::size_t c = full; c < cols; ++c) tail[c - full] = src[c];
        const std::uint32_t valid = (1u << (cols - full)) - 1u;
        const fm m = binary_bits(fb::load_aligned(tail), mode, key, row_index + static_cast<std::uint32_t>(full));
        word |= std::uint64_t{simd_compat::bits_from_mask<A>(m) & valid} << (full % 64);
      }
      if (full % 64 != 0 || full < cols) dst[full / 64] = word;  // the row's last word (cols - full < lanes)
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
        pack_one(fb::load_aligned(tail), row_index + static_cast<std::uint32_t>(full), (1u << (cols - full)) - 1u, s, z,
                 full);
      }
    }
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
