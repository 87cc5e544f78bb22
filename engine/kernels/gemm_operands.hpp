#pragma once
// Where gemm_f32 finds B(k, n): a row-major or transposed matrix, or an indirection buffer (an implicit
// im2col, see gemm_f32_params::b_rows). Shared by the scalar reference and every ISA's kernel.
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

}  // namespace
}  // namespace fewmul::kernels::detail
