// batch_norm: every SIMD variant against the scalar reference, bit for bit (the forward, inference and
// backward element-wise passes and the four column sums), on feature counts around the vector widths and the
// 4-vector groups, with a row stride wider than the block, signed zeros, NaNs, infinities, subnormals and
// values AP2 rounds either way; and the reference against sums worked out by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

// Equal bits, except that any NaN matches any NaN (a NaN's payload is not part of the contract).
bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(std::isnan(a[i]) && std::isnan(b[i])) && std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
  return true;
}

// Random values with specials sprinkled in: -0 and +0, NaN, infinities, subnormals and numbers just either
// side of AP2's rounding point (fraction 0x3504f4); `specials` false: finite normal values and zeros only.
std::vector<float> inputs(std::size_t n, std::uint32_t seed, bool specials) {
  std::vector<float> x = random_floats(n, seed, -3.0f, 3.0f);
  for (std::size_t i = 1; i < n; i += 7) x[i] = -0.0f;
  for (std::size_t i = 4; i < n; i += 11) x[i] = std::ldexp(x[i], -20);  // near the mean: tiny differences
  if (!specials) return x;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float specials_list[] = {nan, inf, -inf, 1e-40f, -3e-39f, 0x1.6a09e8p+0f, 0x1.6a09e6p+0f, 0.0f};
  for (std::size_t i = 3, k = 0; i < n; i += 13, ++k) x[i] = specials_list[k % std::size(specials_list)];
  return x;
}

// The operands of one block: x and dy (`rows` x `features`, row stride ld), random per-feature statistics,
// scale, shift and their gradients, and the parameters pointing at them.
struct block_operands {
  std::vector<float> x, dy, mean, inv_std, gamma, beta, gamma_grad, beta_grad;
  kernels::batch_norm_params p;
  block_operands(std::size_t rows, std::size_t features, std::size_t ld, std::uint32_t seed, bool specials)
      : x(inputs(rows * ld, seed, specials)),
        dy(inputs(rows * ld, seed + 1, specials)),
        mean(random_floats(features, seed + 2, -0.5f, 0.5f)),
        inv_std(random_floats(features, seed + 3, 0.25f, 4.0f)),
        gamma(random_floats(features, seed + 4, -2.0f, 2.0f)),
        beta(random_floats(features, seed + 5, -1.0f, 1.0f)),
        gamma_grad(random_floats(features, seed + 6, -9.0f, 9.0f)),
        beta_grad(random_floats(features, seed + 7, -9.0f, 9.0f)),
        p{.rows = rows, .features = features, .ld = ld} {
    p.x = x.data();
    p.dy = dy.data();
    p.mean = mean.data();
    p.inv_std = inv_std.data();
    p.gamma = gamma.data();
    p.beta = beta.data();
    p.gamma_grad = gamma_grad.data();
    p.beta_grad = beta_grad.data();
  }
  block_operands(const block_operands&) = delete;  // p points into this object
  block_operands& operator=(const block_operands&) = delete;
};

}  // namespace

TEST_CASE("batch_norm matches the reference bit for bit on every ISA, feature count and row count") {
  const auto& ref = kernels::reference_kernels();
  using kernels::batch_norm_sum;
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (std::size_t features : {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200})
      for (std::size_t rows : {1, 2, 5, 33})
        for (bool specials : {false, true}) {
          CAPTURE(features);
          CAPTURE(rows);
          CAPTURE(specials);
          const std::size_t ld = features + 5;  // columns past the block must stay untouched
          block_operands operands(rows, features, ld, static_cast<std::uint32_t>(features * 97 + rows * 5 + specials),
                                  specials);
          kernels::batch_norm_params& p = operands.p;
          p.count = static_cast<float>(rows * 3);
          p.second = features + 2;
          for (bool relu : {false, true}) {
            CAPTURE(relu);
            p.relu = relu;
            for (const kernels::batch_norm_fn kernels::kernel_table::*pass :
                 {&kernels::kernel_table::batch_norm_forward, &kernels::kernel_table::batch_norm_inference,
                  &kernels::kernel_table::batch_norm_backward}) {
              std::vector<float> want(rows * ld, 7.0f), got = want;  // 7: every value of the block is written
              p.out = want.data();
              (ref.*pass)(p);
              p.out = got.data();
              (k.*pass)(p);
              CHECK(same_values(want, got));
            }
            for (batch_norm_sum sum : {batch_norm_sum::values, batch_norm_sum::squares, batch_norm_sum::shift_squares,
                                       batch_norm_sum::gradients}) {
              CAPTURE(static_cast<int>(sum));
              std::vector<float> want(2 * features + 2, 7.0f), got = want;
              p.sum = sum;
              p.sums = want.data();
              ref.batch_norm_sums(p);
              p.sums = got.data();
              k.batch_norm_sums(p);
              CHECK(same_values(want, got));
            }
          }
        }
  }
}

TEST_CASE("batch_norm with a fused ReLU gives the bits of batch norm and ReLU apart") {
  // The reference fused against the two steps: ReLU on the forward values; the backward and gradient sums
  // on dy zeroed where the forward value was not positive (the ReLU layer's gradient), NaNs included.
  const auto& ref = kernels::reference_kernels();
  std::size_t positive = 0, values = 0;  // both sides of the ReLU must be exercised
  for (std::size_t features : {1, 7, 16, 33})
    for (std::size_t rows : {1, 5, 33}) {
      CAPTURE(features);
      CAPTURE(rows);
      const std::size_t ld = features + 3;
      block_operands operands(rows, features, ld, static_cast<std::uint32_t>(features * 31 + rows), true);
      kernels::batch_norm_params& p = operands.p;
      const std::vector<float>& dy = operands.dy;
      p.count = static_cast<float>(rows * 2);
      p.second = features;
      // Apart: batch norm, then ReLU (y > 0 ? y : 0) and its gradient (y > 0 ? dy : 0).
      std::vector<float> y(rows * ld, 7.0f), relu_y = y, masked_dy = dy;
      p.out = y.data();
      ref.batch_norm_forward(p);
      values += rows * features;
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t f = 0; f < features; ++f) {
          const std::size_t at = r * ld + f;
          relu_y[at] = y[at] > 0.0f ? y[at] : 0.0f;
          masked_dy[at] = y[at] > 0.0f ? dy[at] : 0.0f;
          positive += y[at] > 0.0f;
        }
      std::vector<float> apart_sums(2 * features, 7.0f), apart_dx(rows * ld, 7.0f);
      p.dy = masked_dy.data();
      p.sum = kernels::batch_norm_sum::gradients;
      p.sums = apart_sums.data();
      ref.batch_norm_sums(p);
      p.out = apart_dx.data();
      ref.batch_norm_backward(p);
      // Fused.
      p.relu = true;
      p.dy = dy.data();
      std::vector<float> fused_y(rows * ld, 7.0f), fused_sums(2 * features, 7.0f), fused_dx(rows * ld, 7.0f);
      p.out = fused_y.data();
      ref.batch_norm_forward(p);
      p.sums = fused_sums.data();
      ref.batch_norm_sums(p);
      p.out = fused_dx.data();
      ref.batch_norm_backward(p);
      CHECK(same_values(relu_y, fused_y));
      CHECK(same_values(apart_sums, fused_sums));
      CHECK(same_values(apart_dx, fused_dx));
    }
  CHECK(positive > values / 4);
  CHECK(positive < values * 3 / 4);
}

TEST_CASE("batch_norm's reference sums and normalizes as worked out by hand") {
  // Two features, three rows, row stride 3 (the third column is not part of the block).
  const float x[] = {1.0f, -2.0f, 99.0f, 3.0f, 0.5f, 99.0f, 8.0f, -0.5f, 99.0f};
  const float dy[] = {0.5f, 1.0f, 99.0f, -1.0f, 2.0f, 99.0f, 0.25f, -4.0f, 99.0f};
  const float mean[] = {4.0f, -0.5f}, inv_std[] = {0.5f, 2.0f}, gamma[] = {2.0f, -1.0f}, beta[] = {1.0f, 0.25f};
  const float gamma_grad[] = {1.0f, 2.0f}, beta_grad[] = {0.5f, -1.0f};
  const auto& ref = kernels::reference_kernels();
  kernels::batch_norm_params p{.rows = 3, .features = 2, .ld = 3, .x = x, .dy = dy};
  p.mean = mean;
  p.inv_std = inv_std;
  p.gamma = gamma;
  p.beta = beta;
  p.gamma_grad = gamma_grad;
  p.beta_grad = beta_grad;
  p.count = 3.0f;
  float sums[4] = {};
  p.sums = sums;
  p.second = 2;
  p.sum = kernels::batch_norm_sum::values;
  ref.batch_norm_sums(p);
  CHECK(sums[0] == 12.0f);
  CHECK(sums[1] == -2.0f);
  p.sum = kernels::batch_norm_sum::squares;  // d: (-3, -1, 4) and (-1.5, 1, 0)
  ref.batch_norm_sums(p);
  CHECK(sums[0] == 26.0f);
  CHECK(sums[1] == 3.25f);
  p.sum = kernels::batch_norm_sum::shift_squares;  // AP2(d): (-4, -1, 4) and (-2, 1, 0)
  ref.batch_norm_sums(p);
  CHECK(sums[0] == 29.0f);
  CHECK(sums[1] == 4.0f);
  p.sum = kernels::batch_norm_sum::gradients;  // xhat: (-1.5, -0.5, 2) and (-3, 2, 0)
  ref.batch_norm_sums(p);
  CHECK(sums[0] == -0.75f + 0.5f + 0.5f);
  CHECK(sums[1] == -3.0f + 4.0f + 0.0f);
  CHECK(sums[2] == -0.25f);
  CHECK(sums[3] == -1.0f);
  float out[9];
  std::fill_n(out, 9, 7.0f);
  p.out = out;
  ref.batch_norm_forward(p);  // gamma * xhat + beta
  const float forward[] = {-2.0f, 3.25f, 7.0f, 0.0f, -1.75f, 7.0f, 5.0f, 0.25f, 7.0f};
  for (int i = 0; i < 9; ++i) CHECK(out[i] == forward[i]);
  std::fill_n(out, 9, 7.0f);
  ref.batch_norm_inference(p);  // the same values here (every product exact), in the other order
  for (int i = 0; i < 9; ++i) CHECK(out[i] == forward[i]);
  ref.batch_norm_backward(p);  // gamma inv_std / 3 * (3 dy - beta_grad - xhat gamma_grad)
  const float backward[] = {1.0f / 3.0f * (1.5f - 0.5f + 1.5f),  -2.0f / 3.0f * (3.0f + 1.0f + 6.0f),   7.0f,
                            1.0f / 3.0f * (-3.0f - 0.5f + 0.5f), -2.0f / 3.0f * (6.0f + 1.0f - 4.0f),   7.0f,
                            1.0f / 3.0f * (0.75f - 0.5f - 2.0f), -2.0f / 3.0f * (-12.0f + 1.0f - 0.0f), 7.0f};
  for (int i = 0; i < 9; ++i) CHECK(out[i] == doctest::Approx(backward[i]));
}
