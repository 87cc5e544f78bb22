// gemm_xnor: every SIMD variant against the scalar reference, bit for bit.
#include <doctest/doctest.h>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("gemm_xnor matches the reference bit for bit on ragged sizes, padding bits cancelling") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t m : {1u, 3u, 4u, 5u, 7u, 8u, 9u, 37u})
      for (std::size_t n : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 15u, 16u, 17u, 33u, 100u})
        for (std::size_t k_bits : {1u, 63u, 64u, 65u, 130u, 1000u}) {
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(k_bits);
          const std::size_t words = kernels::words_for(k_bits);
          const auto seed = static_cast<std::uint32_t>(m * 7919 + n * 31 + k_bits);
          const auto a = random_bits(m, k_bits, seed);
          const auto b = random_bits(n, k_bits, seed + 1);  // [n][words], padding 0
          std::vector<std::uint64_t> bt(words * n);
          for (std::size_t j = 0; j < n; ++j)
            for (std::size_t w = 0; w < words; ++w) bt[w * n + j] = b[j * words + w];
          std::vector<std::int32_t> want(m * n), got(m * n, -12345);
          kernels::gemm_xnor_params x{.m = m,
                                      .n = n,
                                      .k_words = words,
                                      .k_bits = static_cast<std::int32_t>(k_bits),
                                      .a = a.data(),
                                      .lda = words,
                                      .bt = bt.data(),
                                      .ldbt = n,
                                      .c = want.data(),
                                      .ldc = n};
          ref.gemm_xnor(x);
          x.c = got.data();
          k.gemm_xnor(x);
          CHECK(want == got);
          // The reference is the ±1 dot product.
          const std::size_t i = m / 2, j = n / 2;
          int dot = 0;
          for (std::size_t p = 0; p < k_bits; ++p)
            dot += (((a[i * words + p / 64] >> (p % 64)) & 1u) == ((b[j * words + p / 64] >> (p % 64)) & 1u)) ? 1 : -1;
          CHECK(want[i * n + j] == dot);
        }
  }
}
