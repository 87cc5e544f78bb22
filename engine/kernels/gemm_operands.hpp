#pragma once
// Where gemm_f32 finds B(k, n) and gemm_shift its codes Q(m, k): strided matrices, or indirection buffers (an
// implicit im2col, see gemm_f32_params::b_rows and gemm_shift_params::q_rows). Shared by the scalar references
// and every ISA's kernels.
#include <algorithm>
#include <cstddef>

#include "fewmul/kernels.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit: each ISA's unit compiles these with its own flags

// B(k, n) and the run of columns n, n + 1, ... that lie contiguously after it (at most `want`).
struct b_run {
  const float* at;
  std::size_t length;
};
inline b_run gemm_f32_b_run(const gemm_f32_params& p, std::size_t k, std::size_t n, std::size_t want) {
  if (p.b_rows) {
    const std::size_t t = p.b_column + n, within = t % p.b_segment;
    return {p.b_rows[k * p.ldb + t / p.b_segment] + within, std::min(want, p.b_segment - within)};
  }
  if (p.b_transposed) return {p.b + n * p.ldb + k, 1};
  return {p.b + k * p.ldb + n, want};
}
inline float gemm_f32_b(const gemm_f32_params& p, std::size_t k, std::size_t n) {
  return *gemm_f32_b_run(p, k, n, 1).at;
}

// Q(m, k) and the number of codes Q(m + 1, k), ... that follow it contiguously (at most `want`).
struct q_run {
  const std::int8_t* at;
  std::size_t length;
};
inline q_run gemm_shift_q_run(const gemm_shift_params& p, std::size_t m, std::size_t k, std::size_t want) {
  if (p.q_rows) {
    const std::size_t t = p.q_column + m, within = t % p.q_segment;
    return {p.q_rows[k * p.q_cs + t / p.q_segment] + within, std::min(want, p.q_segment - within)};
  }
  return {p.q + m * p.q_rs + k * p.q_cs, p.q_rs == 1 ? want : 1};
}
inline int gemm_shift_q(const gemm_shift_params& p, std::size_t m, std::size_t k) {
  return *gemm_shift_q_run(p, m, k, 1).at;
}

}  // namespace
}  // namespace fewmul::kernels::detail
