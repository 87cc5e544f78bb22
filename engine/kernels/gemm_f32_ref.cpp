// gemm_f32: scalar reference (contract in fewmul/kernels.hpp).
#include <cmath>

#include "kernels/gemm_operands.hpp"
#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {

void gemm_f32_ref(const gemm_f32_params& p) noexcept {
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::size_t q = 0; q < p.k; ++q) {
        if (p.skip_zero_a && p.a[i * p.a_rs + q * p.a_cs] == 0.0f) continue;
        acc = std::fma(p.a[i * p.a_rs + q * p.a_cs], gemm_f32_b(p, q, j), acc);
      }
      p.c[i * p.ldc + j] = acc;
    }
}

}  // namespace fewmul::kernels::detail
