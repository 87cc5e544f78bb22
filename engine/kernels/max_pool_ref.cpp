// max_pool: scalar reference (contract in fewmul/kernels.hpp).
#include "kernels/reference.hpp"

namespace fewmul::kernels::detail {
namespace {

// Index 0..3 of the window's winner, as the contract orders the candidates.
int window_winner(const float* x, std::size_t at, std::size_t row, std::size_t channels) {
  const std::size_t offsets[4] = {0, channels, row, row + channels};
  int winner = 0;
  float best = x[at];
  for (int k = 1; k < 4; ++k)
    if (x[at + offsets[k]] > best) {
      best = x[at + offsets[k]];
      winner = k;
    }
  return winner;
}

}  // namespace

void max_pool_forward_ref(const max_pool_params& p) noexcept {
  const std::size_t ho = p.height / 2, wo = p.width / 2, c = p.channels, row = p.width * c;
  for (std::size_t b = 0; b < p.images; ++b) {
    const float* x = p.x + b * p.height * row;
    float* y = p.y + b * ho * wo * c;
    for (std::size_t oy = 0; oy < ho; ++oy)
      for (std::size_t ox = 0; ox < wo; ++ox)
        for (std::size_t ch = 0; ch < c; ++ch) {
          const std::size_t at = (2 * oy * p.width + 2 * ox) * c + ch;
          const std::size_t offsets[4] = {0, c, row, row + c};
          y[(oy * wo + ox) * c + ch] = x[at + offsets[window_winner(x, at, row, c)]];
        }
  }
}

void max_pool_backward_ref(const max_pool_params& p) noexcept {
  const std::size_t ho = p.height / 2, wo = p.width / 2, c = p.channels, row = p.width * c;
  for (std::size_t b = 0; b < p.images; ++b) {
    const float* x = p.x + b * p.height * row;
    const float* dy = p.dy + b * ho * wo * c;
    float* dx = p.dx + b * p.height * row;
    for (std::size_t i = 0; i < p.height * row; ++i) dx[i] = 0.0f;
    for (std::size_t oy = 0; oy < ho; ++oy)
      for (std::size_t ox = 0; ox < wo; ++ox)
        for (std::size_t ch = 0; ch < c; ++ch) {
          const std::size_t at = (2 * oy * p.width + 2 * ox) * c + ch;
          const std::size_t offsets[4] = {0, c, row, row + c};
          dx[at + offsets[window_winner(x, at, row, c)]] = dy[(oy * wo + ox) * c + ch];
        }
  }
}

}  // namespace fewmul::kernels::detail
