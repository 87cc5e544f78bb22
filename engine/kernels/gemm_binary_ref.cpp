// gemm_binary: scalar reference (contract in fewmul/kernels.hpp).
#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {

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

}  // namespace fewmul::kernels::detail
