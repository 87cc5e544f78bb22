// pack_binary, pack_ternary: scalar reference (contract in fewmul/kernels.hpp).
#include <cmath>

#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {
namespace {

bool sample_binary(float w, sample_mode mode, std::uint64_t key, std::uint32_t index) {
  if (mode == sample_mode::deterministic) return w >= 0.0f;
  // P(+1) = (w+1)/2: compare a 23-bit uniform with (w+1) * 2^22 (exact scaling by a power of two).
  return static_cast<float>(uniform23_ref(key, index)) < (w + 1.0f) * 4194304.0f;
}

bool sample_nonzero(float w, sample_mode mode, std::uint64_t key, std::uint32_t index) {
  const float a = std::fabs(w);
  if (mode == sample_mode::deterministic) return a >= 0.5f;
  return static_cast<float>(uniform23_ref(key, index)) < a * 8388608.0f;
}

}  // namespace

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

}  // namespace fewmul::kernels::detail
