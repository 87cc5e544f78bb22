// pack_binary and pack_ternary: every SIMD variant against the scalar reference, bit for bit.
#include <doctest/doctest.h>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

TEST_CASE("pack_binary and pack_ternary match the reference and keep padding bits zero") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t cols : column_sizes)
      for (auto mode : {kernels::sample_mode::deterministic, kernels::sample_mode::stochastic}) {
        CAPTURE(cols);
        const std::size_t rows = 3, ldw = cols + 5, ldb = kernels::words_for(cols) + 1;
        auto w = random_floats(rows * ldw, static_cast<std::uint32_t>(cols), -1.3f, 1.3f);
        w[0] = 0.0f;
        w[ldw - 1] = -0.0f;
        std::vector<std::uint64_t> want(rows * ldb, 0), got(rows * ldb, ~0ull);
        ref.pack_binary(w.data(), rows, cols, ldw, want.data(), ldb, mode, 1234);
        k.pack_binary(w.data(), rows, cols, ldw, got.data(), ldb, mode, 1234);
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t word = 0; word < kernels::words_for(cols); ++word)
            CHECK(want[r * ldb + word] == got[r * ldb + word]);
        std::vector<std::uint64_t> want_s(rows * ldb, 0), want_z(rows * ldb, 0), got_s(rows * ldb, ~0ull),
            got_z(rows * ldb, ~0ull);
        ref.pack_ternary(w.data(), rows, cols, ldw, want_s.data(), want_z.data(), ldb, mode, 99);
        k.pack_ternary(w.data(), rows, cols, ldw, got_s.data(), got_z.data(), ldb, mode, 99);
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t word = 0; word < kernels::words_for(cols); ++word) {
            CHECK(want_s[r * ldb + word] == got_s[r * ldb + word]);
            CHECK(want_z[r * ldb + word] == got_z[r * ldb + word]);
            CHECK((got_s[r * ldb + word] & ~got_z[r * ldb + word]) == 0);  // sign ⊆ nonzero
          }
        const std::size_t last = kernels::words_for(cols) - 1, valid = cols - last * 64;
        if (valid < 64)
          for (std::size_t r = 0; r < rows; ++r) {
            CHECK((got[r * ldb + last] >> valid) == 0);
            CHECK((got_z[r * ldb + last] >> valid) == 0);
          }
      }
  }
}

TEST_CASE("pack_binary and pack_ternary deterministic mode follows the documented convention") {
  const float w[6] = {0.7f, -0.2f, 0.0f, -0.0f, 0.5f, -0.6f};
  std::uint64_t bits = 0, sign = 0, nonzero = 0;
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    k.pack_binary(w, 1, 6, 6, &bits, 1, kernels::sample_mode::deterministic, 0);
    CHECK(bits == 0b011101u);  // w >= 0 -> +1 (bit 1), so 0 and -0 give +1
    k.pack_ternary(w, 1, 6, 6, &sign, &nonzero, 1, kernels::sample_mode::deterministic, 0);
    CHECK(nonzero == 0b110001u);  // |w| >= 0.5
    CHECK(sign == 0b010001u);
  }
}
