// gemm_ternary: scalar reference (contract in fewmul/kernels.hpp).
#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {

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

}  // namespace fewmul::kernels::detail
