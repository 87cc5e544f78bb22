// gemm_shift: scalar reference (contract in fewmul/kernels.hpp).
#include <cmath>

#include "kernels/gemm_operands.hpp"
#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {

void gemm_shift_ref(const gemm_shift_params& p) noexcept {
  const float tiny = std::ldexp(1.0f, -shift_safe_exponent), huge = std::ldexp(1.0f, shift_safe_exponent);
  bool out_of_range = false;
  for (std::size_t q = 0; q < p.k; ++q)
    for (std::size_t j = 0; j < p.n; ++j) out_of_range |= !(std::fabs(p.b[q * p.ldb + j]) <= huge);
  if (out_of_range && p.b_out_of_range) *p.b_out_of_range = true;
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::size_t q = 0; q < p.k; ++q) {
        const int code = gemm_shift_q(p, i, q);
        const float v = p.b[q * p.ldb + j];
        if (std::fabs(v) < tiny || code == 0) continue;
        const float scaled = std::ldexp(v, (code < 0 ? -code : code) - pow2_code_bias);
        acc += code < 0 ? -scaled : scaled;
      }
      p.c[i * p.c_rs + j * p.c_cs] = acc;
    }
}

}  // namespace fewmul::kernels::detail
