// gemm_xnor: scalar reference (contract in fewmul/kernels.hpp).
#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {

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

}  // namespace fewmul::kernels::detail
