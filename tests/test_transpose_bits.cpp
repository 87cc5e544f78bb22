// transpose_bits (bit_transpose.cpp) against a bit-by-bit transpose.
#include <doctest/doctest.h>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("transpose_bits matches a bit-by-bit transpose") {
  for (std::size_t rows : {1u, 63u, 64u, 65u, 130u})
    for (std::size_t cols : {1u, 63u, 64u, 65u, 200u}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const std::size_t ldi = kernels::words_for(cols), ldo = kernels::words_for(rows);
      const auto in = random_bits(rows, cols, static_cast<std::uint32_t>(rows * 7 + cols));
      std::vector<std::uint64_t> out(cols * ldo, ~0ull);
      kernels::transpose_bits(in.data(), rows, cols, ldi, out.data(), ldo);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
          REQUIRE(((in[r * ldi + c / 64] >> (c % 64)) & 1u) == ((out[c * ldo + r / 64] >> (r % 64)) & 1u));
      if (rows % 64)
        for (std::size_t c = 0; c < cols; ++c) CHECK((out[c * ldo + ldo - 1] >> (rows % 64)) == 0);
    }
}
