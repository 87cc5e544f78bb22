#pragma once
// max_pool: 2x2 max-pooling forward and its gradient (contract in fewmul/kernels.hpp), vectors along the
// channels. The window's winner is found with the reference's comparisons in its order (a later
// candidate wins only when strictly greater), as selects: on real feature maps a branch per comparison
// mispredicts about half the time. Channels past the last full vector take the same steps on scalars.
#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct max_pool_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lanes;
  using typename base::fb;

  // The four candidates of a window, (0,0), (0,1), (1,0), (1,1), and which of the later three won.
  template <class V>
  struct window {
    V best;
    decltype(V() > V()) won1, won2, won3;
  };
  template <class V, class Load>
  static window<V> winner(Load load) {
    const V x0 = load(0), x1 = load(1), x2 = load(2), x3 = load(3);
    window<V> w;
    w.won1 = x1 > x0;
    w.best = select(w.won1, x1, x0);
    w.won2 = x2 > w.best;
    w.best = select(w.won2, x2, w.best);
    w.won3 = x3 > w.best;
    w.best = select(w.won3, x3, w.best);
    return w;
  }
  template <class M>
  static fb select(M m, fb a, fb b) {
    return xsimd::select(m, a, b);
  }
  static float select(bool m, float a, float b) { return m ? a : b; }

  // Calls visit(x offset of the window's (0,0), y offset) for every window of images [0, p.images).
  template <class Visit>
  static void for_each_window(const max_pool_params& p, Visit&& visit) {
    const std::size_t ho = p.height / 2, wo = p.width / 2, c = p.channels;
    for (std::size_t b = 0; b < p.images; ++b)
      for (std::size_t oy = 0; oy < ho; ++oy)
        for (std::size_t ox = 0; ox < wo; ++ox)
          visit((b * p.height + 2 * oy) * p.width * c + 2 * ox * c, ((b * ho + oy) * wo + ox) * c);
  }

  static void max_pool_forward(const max_pool_params& p) noexcept {
    const std::size_t c = p.channels, row = p.width * c;
    const std::size_t offsets[4] = {0, c, row, row + c};
    for_each_window(p, [&](std::size_t xi, std::size_t yi) {
      const float* x = p.x + xi;
      float* y = p.y + yi;
      std::size_t ch = 0;
      for (; ch + lanes <= c; ch += lanes)
        winner<fb>([&](int k) { return fb::load_unaligned(x + offsets[k] + ch); }).best.store_unaligned(y + ch);
      for (; ch < c; ++ch) y[ch] = winner<float>([&](int k) { return x[offsets[k] + ch]; }).best;
    });
  }

  static void max_pool_backward(const max_pool_params& p) noexcept {
    const std::size_t c = p.channels, row = p.width * c, ho = p.height / 2;
    const std::size_t offsets[4] = {0, c, row, row + c};
    for_each_window(p, [&](std::size_t xi, std::size_t yi) {
      const float* x = p.x + xi;
      const float* g = p.dy + yi;
      float* d = p.dx + xi;
      std::size_t ch = 0;
      for (; ch + lanes <= c; ch += lanes) {
        const auto w = winner<fb>([&](int k) { return fb::load_unaligned(x + offsets[k] + ch); });
        const fb through = fb::load_unaligned(g + ch), zero(0.0f);
        // The winner is the last candidate that won its comparison.
        const auto is3 = w.won3, is2 = w.won2 && !w.won3, is1 = w.won1 && !(w.won2 || w.won3);
        const auto is0 = !(w.won1 || w.won2 || w.won3);
        xsimd::select(is0, through, zero).store_unaligned(d + offsets[0] + ch);
        xsimd::select(is1, through, zero).store_unaligned(d + offsets[1] + ch);
        xsimd::select(is2, through, zero).store_unaligned(d + offsets[2] + ch);
        xsimd::select(is3, through, zero).store_unaligned(d + offsets[3] + ch);
      }
      for (; ch < c; ++ch) {
        const auto w = winner<float>([&](int k) { return x[offsets[k] + ch]; });
        const int won = w.won3 ? 3 : w.won2 ? 2 : w.won1 ? 1 : 0;
        for (int k = 0; k < 4; ++k) d[offsets[k] + ch] = k == won ? g[ch] : 0.0f;
      }
    });
    // Inputs no window reads: an odd map's last column and last row.
    for (std::size_t b = 0; b < p.images; ++b) {
      float* d = p.dx + b * p.height * row;
      if (p.width % 2)
        for (std::size_t y = 0; y < 2 * ho; ++y) std::fill_n(d + y * row + (p.width - 1) * c, c, 0.0f);
      if (p.height % 2) std::fill_n(d + (p.height - 1) * row, row, 0.0f);
    }
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail
