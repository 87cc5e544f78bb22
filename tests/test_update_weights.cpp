// update_weights: every SIMD variant against the scalar reference, bit for bit, and the reference against
// the update formulas written out in double-free scalar code.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "kernel_test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

struct update_state {
  std::vector<float> w, g, m1, m2;
};

update_state random_state(std::size_t n, std::uint32_t seed) {
  update_state s{random_floats(n, seed, -1.5f, 1.5f), random_floats(n, seed + 1, -0.1f, 0.1f),
                 random_floats(n, seed + 2, -0.05f, 0.05f), random_floats(n, seed + 3, 0.0f, 0.01f)};
  // Edge values: signed zeros, weights at the clip bounds, a zero second moment, a NaN gradient.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (std::size_t i = 0; i < n; i += 11) s.g[i] = 0.0f;
  for (std::size_t i = 3; i < n; i += 13) s.w[i] = -0.0f;
  for (std::size_t i = 5; i < n; i += 17) s.w[i] = 1.0f;
  for (std::size_t i = 7; i < n; i += 19) s.m2[i] = 0.0f;
  if (n > 40) s.g[40] = nan;
  return s;
}

constexpr kernels::update_rule all_rules[] = {kernels::update_rule::sgd, kernels::update_rule::momentum,
                                              kernels::update_rule::adam, kernels::update_rule::adamax};

// The steps' settings (adam's bias corrections of an early step), operands left to the caller.
kernels::update_weights_params step_settings(kernels::update_rule rule) {
  kernels::update_weights_params p{.rule = rule, .rate = 0.3f, .momentum = 0.9f};
  p.correction1 = 0.271f;
  p.correction2 = 0.00299f;
  return p;
}

}  // namespace

TEST_CASE("update_weights matches the reference bit for bit for every rule, size and ISA") {
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (kernels::update_rule rule : all_rules)
      for (std::size_t n : {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000})
        for (const float clip : {0.0f, 1.0f}) {
          CAPTURE(static_cast<int>(rule));
          CAPTURE(n);
          CAPTURE(clip);
          update_state want = random_state(n, static_cast<std::uint32_t>(n)), got = want;
          kernels::update_weights_params p = step_settings(rule);
          p.n = n;
          if (clip > 0.0f) {
            p.lo = -clip;
            p.hi = clip;
          }
          auto run = [&](const kernels::kernel_table& table, update_state& s) {
            kernels::update_weights_params q = p;
            q.w = s.w.data();
            q.g = s.g.data();
            q.m1 = s.m1.data();
            q.m2 = s.m2.data();
            table.update_weights(q);
          };
          run(ref, want);
          run(k, got);
          CHECK(same_bits(want.w, got.w));
          CHECK(same_bits(want.m1, got.m1));
          CHECK(same_bits(want.m2, got.m2));
        }
  }
}

TEST_CASE("update_weights reference applies each rule and clips") {
  const auto& ref = kernels::reference_kernels();
  std::vector<float> w{0.5f, -0.9f, 0.2f}, g{1.0f, -1.0f, 0.0f}, m1{0.1f, 0.0f, 0.0f}, m2{0.0f, 0.0f, 0.0f};
  // sgd, clipped to [-1, 1]: 0.5 - 2 = -1.5 -> -1, -0.9 + 2 = 1.1 -> 1, 0.2 stays.
  ref.update_weights(
      {.rule = kernels::update_rule::sgd, .n = 3, .w = w.data(), .g = g.data(), .rate = 2.0f, .lo = -1.0f, .hi = 1.0f});
  CHECK(w == std::vector<float>{-1.0f, 1.0f, 0.2f});
  // momentum 0.5: m1 = 0.5 * 0.1 + 1 = 1.05, w = -1 - 0.1 * 1.05.
  ref.update_weights({.rule = kernels::update_rule::momentum,
                      .n = 1,
                      .w = w.data(),
                      .g = g.data(),
                      .m1 = m1.data(),
                      .rate = 0.1f,
                      .momentum = 0.5f});
  CHECK(m1[0] == doctest::Approx(1.05f));
  CHECK(w[0] == doctest::Approx(-1.0f - 0.105f));
  // adam's first step with the bias corrections moves each weight by about rate * sign(g).
  std::vector<float> wa{0.0f, 0.0f}, ga{0.5f, -2.0f}, ma{0.0f, 0.0f}, va{0.0f, 0.0f};
  ref.update_weights({.rule = kernels::update_rule::adam,
                      .n = 2,
                      .w = wa.data(),
                      .g = ga.data(),
                      .m1 = ma.data(),
                      .m2 = va.data(),
                      .rate = 0.01f,
                      .correction1 = 0.1f,
                      .correction2 = 0.001f});
  CHECK(wa[0] == doctest::Approx(-0.01f).epsilon(1e-3));
  CHECK(wa[1] == doctest::Approx(0.01f).epsilon(1e-3));
}

TEST_CASE("update_weights over a gradient in parts equals the update with the parts folded first") {
  // The fused fold of the optimizer (collective.hpp): g = (g_0 + g_1) + g_2 ... in part order, then the rule;
  // the parts lie g_stride apart (a gap after each, so that reading the wrong stride shows).
  const auto& ref = kernels::reference_kernels();
  for (isa which : isas_under_test()) {
    const auto& k = kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (kernels::update_rule rule : all_rules)
      for (std::size_t n : {1, 15, 16, 17, 33, 1000})
        for (std::size_t parts : {2, 3, 5}) {
          CAPTURE(static_cast<int>(rule));
          CAPTURE(n);
          CAPTURE(parts);
          const std::size_t stride = n + 3;
          // Parts of mixed magnitudes, so that another order of the additions rounds differently.
          std::vector<float> g_parts = random_floats(parts * stride, static_cast<std::uint32_t>(7 * n + parts), -1, 1);
          for (std::size_t q = 0; q < parts; ++q)
            for (std::size_t i = 0; i < n; ++i) g_parts[q * stride + i] *= q % 2 == 0 ? 1e-3f : 3.0f;
          std::vector<float> folded(n);
          for (std::size_t i = 0; i < n; ++i) {
            folded[i] = g_parts[i];
            for (std::size_t q = 1; q < parts; ++q) folded[i] += g_parts[q * stride + i];
          }
          update_state want = random_state(n, static_cast<std::uint32_t>(n) + 5), got = want, got_ref = want;
          kernels::update_weights_params p = step_settings(rule);
          p.n = n;
          auto run = [&](const kernels::kernel_table& table, update_state& s, const float* g, std::size_t gp) {
            kernels::update_weights_params q = p;
            q.w = s.w.data();
            q.g = g;
            q.g_parts = gp;
            q.g_stride = stride;
            q.m1 = s.m1.data();
            q.m2 = s.m2.data();
            table.update_weights(q);
          };
          run(ref, want, folded.data(), 1);
          run(ref, got_ref, g_parts.data(), parts);
          run(k, got, g_parts.data(), parts);
          CHECK(same_bits(want.w, got_ref.w));
          CHECK(same_bits(want.m1, got_ref.m1));
          CHECK(same_bits(want.m2, got_ref.m2));
          CHECK(same_bits(want.w, got.w));
          CHECK(same_bits(want.m1, got.m1));
          CHECK(same_bits(want.m2, got.m2));
        }
  }
}
