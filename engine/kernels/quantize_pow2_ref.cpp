// quantize_pow2: scalar reference (contract in fewmul/kernels.hpp).
#include <cmath>
#include <cstring>

#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {
namespace {

std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

}  // namespace

void quantize_pow2_ref(const float* x, std::size_t n, std::int8_t* codes, int kmin, int kmax, std::uint64_t key,
                       std::uint32_t index0) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t bits = float_bits(x[i]) & 0x7fffffffu;
    const bool negative = x[i] < 0.0f;
    const std::uint32_t u = uniform23_ref(key, static_cast<std::uint32_t>(index0 + i));
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

}  // namespace fewmul::kernels::detail
