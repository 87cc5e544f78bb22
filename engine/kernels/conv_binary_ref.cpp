// conv_binary: scalar reference (contract in fewmul/kernels.hpp) and the workspace test shared by every ISA.
#include "kernels/gemm_blocking.hpp"
#include "kernels/reference.hpp"

namespace fewmul::kernels {

bool conv_binary_fits(std::size_t width, std::size_t channels, std::size_t kernel, const cache_sizes& c) noexcept {
  // Kernels up to 7x7 (the tile keeps one table pointer per tap and row).
  if (channels == 0 || channels % 4 != 0 || kernel == 0 || kernel > 7 || width == 0) return false;
  return detail::conv_binary_fixed_bytes(channels, kernel) + kernel * detail::conv_binary_row_bytes(width, channels) <=
         detail::conv_binary_workspace_bytes(c);
}

namespace detail {

// gemm_binary_ref's sums on the im2col matrix, read in place: groups of four k, t = (s0 + s1) + (s2 + s3).
void conv_binary_ref(const conv_binary_params& p) noexcept {
  const std::size_t kernel = p.kernel, c_in = p.channels;
  const std::size_t pad = p.same_padding ? (kernel - 1) / 2 : 0;
  const std::size_t ho = p.same_padding ? p.height : p.height + 1 - kernel;
  const std::size_t wo = p.same_padding ? p.width : p.width + 1 - kernel;
  const std::size_t k_size = kernel * kernel * c_in;
  auto x_at = [&](std::size_t position, std::size_t k) -> float {
    const std::size_t image = position / (ho * wo), oy = position / wo % ho, ox = position % wo;
    const std::size_t tap = k / c_in, c = k % c_in;
    const std::size_t iy = oy + tap / kernel, ix = ox + tap % kernel;  // pad rows/columns above/left
    if (iy < pad || ix < pad || iy - pad >= p.height || ix - pad >= p.width) return 0.0f;
    return p.x[((image * p.height + iy - pad) * p.width + ix - pad) * c_in + c];
  };
  for (std::size_t i = 0; i < p.rows; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::size_t q0 = 0; q0 < k_size; q0 += 4) {
        float s[4];
        for (std::size_t u = 0; u < 4; ++u) {
          const float v = x_at(p.p0 + i, q0 + u);
          s[u] = bit_at(p.sign, p.ldb, q0 + u, j) ? v : -v;
        }
        acc = acc + ((s[0] + s[1]) + (s[2] + s[3]));
      }
      p.c[i * p.ldc + j] = acc;
    }
}

}  // namespace detail
}  // namespace fewmul::kernels
