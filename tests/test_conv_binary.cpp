// conv_binary: every SIMD variant against the scalar reference, bit for bit, and the reference against
// gemm_binary's on the explicit im2col matrix (the implicit GEMM keeps gemm_binary's sums and order).
#include <doctest/doctest.h>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

struct conv_case {
  std::size_t images, height, width, channels, kernel;
  bool same;
};

std::size_t out_size(std::size_t size, std::size_t kernel, bool same) { return same ? size : size + 1 - kernel; }

// The im2col matrix of x (k = (ky*kernel + kx)*channels + c, zeros in the padding).
std::vector<float> im2col(const std::vector<float>& x, const conv_case& s) {
  const std::size_t ho = out_size(s.height, s.kernel, s.same), wo = out_size(s.width, s.kernel, s.same);
  const std::size_t k_size = s.kernel * s.kernel * s.channels;
  const long pad = s.same ? static_cast<long>(s.kernel - 1) / 2 : 0;
  std::vector<float> cols(s.images * ho * wo * k_size, 0.0f);
  for (std::size_t b = 0; b < s.images; ++b)
    for (std::size_t oy = 0; oy < ho; ++oy)
      for (std::size_t ox = 0; ox < wo; ++ox)
        for (std::size_t ky = 0; ky < s.kernel; ++ky)
          for (std::size_t kx = 0; kx < s.kernel; ++kx) {
            const long iy = static_cast<long>(oy + ky) - pad, ix = static_cast<long>(ox + kx) - pad;
            if (iy < 0 || ix < 0 || iy >= static_cast<long>(s.height) || ix >= static_cast<long>(s.width)) continue;
            for (std::size_t c = 0; c < s.channels; ++c)
              cols[((b * ho + oy) * wo + ox) * k_size + (ky * s.kernel + kx) * s.channels + c] =
                  x[((b * s.height + static_cast<std::size_t>(iy)) * s.width + static_cast<std::size_t>(ix)) *
                        s.channels +
                    c];
          }
  return cols;
}

}  // namespace

TEST_CASE("conv_binary matches the reference bit for bit and equals gemm_binary on the im2col matrix") {
  const auto& ref = kernels::reference_kernels();
  // Ragged maps and channel counts around the groups of 4, kernels 1/2/3/5 ("same" for odd kernels, "valid" for any:
  // Lin et al.'s 2x2), output channels around the register tiles (12x2 narrow, 6x4), and a map tall and wide enough
  // that a band of input rows splits inside an image.
  const conv_case cases[] = {{1, 1, 1, 4, 1, true},   {2, 3, 2, 4, 3, true},  {1, 5, 7, 8, 3, true},
                             {3, 4, 4, 12, 3, false}, {1, 6, 5, 60, 5, true}, {2, 7, 9, 64, 3, true},
                             {1, 9, 3, 68, 3, false}, {2, 5, 6, 8, 2, false}, {1, 20, 33, 64, 3, true}};
  const std::size_t outputs[] = {1, 15, 16, 17, 32, 33, 64, 65, 130};
  for (fewmul::isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (const kernels::cache_sizes& caches : caches_under_test()) {
      workspace ws(k.workspace_bytes(caches));
      for (const conv_case& s : cases) {
        if (!kernels::conv_binary_fits(s.width, s.channels, s.kernel, caches)) continue;
        const std::size_t ho = out_size(s.height, s.kernel, s.same), wo = out_size(s.width, s.kernel, s.same);
        const std::size_t positions = s.images * ho * wo, k_size = s.kernel * s.kernel * s.channels;
        auto x = random_floats(s.images * s.height * s.width * s.channels, static_cast<std::uint32_t>(k_size + ho));
        for (std::size_t i = 0; i < x.size(); i += 3) x[i] = 0.0f;  // ReLU zeros
        const std::vector<float> cols = im2col(x, s);
        for (std::size_t n : outputs) {
          if (s.height * s.width * s.channels > 4096 && n != 17 && n != 65) continue;  // the big map: two tiles
          CAPTURE(s.height);
          CAPTURE(s.width);
          CAPTURE(s.channels);
          CAPTURE(s.kernel);
          CAPTURE(n);
          const std::size_t ldb = kernels::words_for(n);
          const auto bits = random_bits(k_size, n, static_cast<std::uint32_t>(n * 7 + k_size));
          std::vector<float> want(positions * n), got(positions * n, -7.0f), via_gemm(positions * n, -7.0f);
          ref.gemm_binary({.m = positions,
                           .n = n,
                           .k = k_size,
                           .a = cols.data(),
                           .a_rs = k_size,
                           .a_cs = 1,
                           .bits = bits.data(),
                           .ldb = ldb,
                           .c = via_gemm.data(),
                           .ldc = n});
          kernels::conv_binary_params p{.x = x.data(),
                                        .images = s.images,
                                        .height = s.height,
                                        .width = s.width,
                                        .channels = s.channels,
                                        .kernel = s.kernel,
                                        .same_padding = s.same,
                                        .p0 = 0,
                                        .rows = positions,
                                        .n = n,
                                        .sign = bits.data(),
                                        .ldb = ldb,
                                        .c = want.data(),
                                        .ldc = n,
                                        .caches = caches,
                                        .workspace = ws.get()};
          ref.conv_binary(p);
          CHECK(same_bits(want, via_gemm));
          p.c = got.data();
          k.conv_binary(p);
          CHECK(same_bits(want, got));
          // A range of positions that starts and ends inside images and rows (as the layer's tasks split them).
          if (positions > 3) {
            const std::size_t p0 = positions / 3, rows = positions - positions / 3 - 1;
            std::vector<float> part(rows * n, -7.0f);
            p.p0 = p0;
            p.rows = rows;
            p.c = part.data();
            k.conv_binary(p);
            CHECK(same_bits(std::vector<float>(want.begin() + static_cast<std::ptrdiff_t>(p0 * n),
                                               want.begin() + static_cast<std::ptrdiff_t>((p0 + rows) * n)),
                            part));
          }
        }
      }
    }
  }
}

TEST_CASE("conv_binary_fits refuses what the implicit GEMM cannot run") {
  const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  CHECK(kernels::conv_binary_fits(32, 64, 3, caches));
  CHECK_FALSE(kernels::conv_binary_fits(32, 3, 3, caches));       // channels % 4 != 0: groups straddle taps
  CHECK_FALSE(kernels::conv_binary_fits(32, 64, 9, caches));      // more taps than the tile keeps
  CHECK_FALSE(kernels::conv_binary_fits(4096, 4096, 3, caches));  // three input rows' tables exceed the workspace
}
