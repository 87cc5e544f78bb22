#pragma once
// Where gemm_f32 finds B(k, n) and gemm_shift its codes Q(m, k): strided matrices, or indirection buffers (an
// implicit im2col, see gemm_f32_params::b_rows and gemm_shift_params::q_rows). Shared by the scalar references
// and every ISA's kernels.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "fewmul/kernels.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit: each ISA's unit compiles these with its own flags

// Columns [column, column + w) of an indirection buffer's rows (w <= 64, a panel's width) cut at segment edges:
// run r reads segment runs[r].segment from runs[r].within, runs[r].length values, into the panel row at
// runs[r].offset. Located once per panel (the divisions), then read row by row. For a strided operand
// (`indirect` false) the list is empty and its 2 KiB array is left uninitialized: the packing calls this once
// per panel on every GEMM, and zero-filling the array there would be a memset on the hot path.
struct segment_runs {
  struct run {
    std::size_t segment, within, length, offset;
  };
  std::array<run, 64> runs;
  std::size_t count = 0;
};
inline segment_runs runs_of(bool indirect, std::size_t column, std::size_t w, std::size_t segment) {
  segment_runs r;  // default-initialized: count 0, runs not written until used
  if (!indirect) return r;
  for (std::size_t j = 0; j < w && r.count < r.runs.size(); ++r.count) {
    const std::size_t t = column + j, within = t % segment, length = std::min(w - j, segment - within);
    r.runs[r.count] = {t / segment, within, length, j};
    j += length;
  }
  return r;
}

// One element, located from scratch (the references; kernels locate a panel's runs once, runs_of).
inline float gemm_f32_b(const gemm_f32_params& p, std::size_t k, std::size_t n) {
  if (p.b_rows) {
    const std::size_t t = p.b_column + n;
    return p.b_rows[k * p.ldb + t / p.b_segment][t % p.b_segment];
  }
  return p.b_transposed ? p.b[n * p.ldb + k] : p.b[k * p.ldb + n];
}
inline int gemm_shift_q(const gemm_shift_params& p, std::size_t m, std::size_t k) {
  if (p.q_rows) {
    const std::size_t t = p.q_column + m;
    return p.q_rows[k * p.q_cs + t / p.q_segment][t % p.q_segment];
  }
  return p.q[m * p.q_rs + k * p.q_cs];
}

}  // namespace
}  // namespace fewmul::kernels::detail
