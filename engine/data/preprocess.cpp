// Global contrast normalization and ZCA whitening, fitted on a training set.
#include <cmath>
#include <string>

#include "fewmul/data.hpp"
#include "fewmul/error.hpp"
#include "fewmul/kernels.hpp"
#include "runtime/parallel_gemm.hpp"

namespace fewmul {
namespace {

using detail::parallel_gemm;
using detail::parallel_rows;

constexpr std::size_t chunk_rows = 1024;

void gcn_rows(float* rows, std::size_t n, std::size_t features, float scale, const runtime& rt) {
  parallel_rows(rt, n, 64, [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      float* x = rows + r * features;
      double sum = 0;
      for (std::size_t f = 0; f < features; ++f) sum += x[f];
      const double mean = sum / static_cast<double>(features);
      double squares = 0;
      for (std::size_t f = 0; f < features; ++f) squares += (x[f] - mean) * (x[f] - mean);
      const double factor = scale / std::max(std::sqrt(squares), 1e-8);
      for (std::size_t f = 0; f < features; ++f) x[f] = static_cast<float>((x[f] - mean) * factor);
    }
  });
}

// c[m x n] = A(m x k) b[k x n] with A(i, j) = a[i * a_rs + j * a_cs], all row-major with widths n.
void matmul(const float* a, std::size_t a_rs, std::size_t a_cs, const float* b, std::size_t m, std::size_t n,
            std::size_t k, float* c, const runtime& rt) {
  const auto& kern = kernels::active_kernels();
  parallel_gemm(rt, m, n, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    detail::run_packed_gemm(kern, kern.gemm_f32,
                            {.m = i1 - i0,
                             .n = j1 - j0,
                             .k = k,
                             .a = a + i0 * a_rs,
                             .a_rs = a_rs,
                             .a_cs = a_cs,
                             .b = b + j0,
                             .ldb = n,
                             .c = c + i0 * n + j0,
                             .ldc = n});
  });
}

// Largest eigenvalue of the symmetric positive semi-definite matrix c (power iteration).
double largest_eigenvalue(const std::vector<double>& c, std::size_t n) {
  // A pseudo-random start: the all-ones vector is an eigenvector of GCN'd data (eigenvalue 0).
  std::vector<double> v(n), w(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = 1.0 + 0.5 * std::sin(static_cast<double>(i) * 12.9898);
  double lambda = 0;
  for (int it = 0; it < 100; ++it) {
    for (std::size_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::size_t j = 0; j < n; ++j) s += c[i * n + j] * v[j];
      w[i] = s;
    }
    double norm = 0;
    for (double x : w) norm += x * x;
    norm = std::sqrt(norm);
    if (norm == 0) return 0;
    for (std::size_t i = 0; i < n; ++i) v[i] = w[i] / norm;
    if (std::fabs(norm - lambda) <= 1e-6 * norm) return norm;
    lambda = norm;
  }
  return lambda;
}

// (c)^(-1/2) of a symmetric positive definite n x n matrix by the coupled Newton-Schulz iteration:
// with Y0 = c/s (eigenvalues in (0, 1]) and Z0 = I, T = (3I - Z Y)/2, Y <- Y T, Z <- T Z converges to
// Y = (c/s)^(1/2), Z = (c/s)^(-1/2), using only matrix products (our GEMM kernel, no LAPACK).
std::vector<float> inverse_sqrt(const std::vector<double>& c, std::size_t n, const runtime& rt) {
  const double s = largest_eigenvalue(c, n) * 1.05 + 1e-12;
  std::vector<float> y(n * n), z(n * n, 0.0f), t(n * n), tmp(n * n);
  for (std::size_t i = 0; i < n * n; ++i) y[i] = static_cast<float>(c[i] / s);
  for (std::size_t i = 0; i < n; ++i) z[i * n + i] = 1.0f;
  for (int it = 0; it < 100; ++it) {
    matmul(z.data(), n, 1, y.data(), n, n, n, tmp.data(), rt);
    double change = 0;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        const float v = (i == j ? 1.5f : 0.0f) - 0.5f * tmp[i * n + j];
        t[i * n + j] = v;
        change = std::max(change, std::fabs(static_cast<double>(v) - (i == j ? 1.0 : 0.0)));
      }
    matmul(y.data(), n, 1, t.data(), n, n, n, tmp.data(), rt);
    y.swap(tmp);
    matmul(t.data(), n, 1, z.data(), n, n, n, tmp.data(), rt);
    z.swap(tmp);
    if (change < 1e-5) break;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(s));
  for (std::size_t i = 0; i < n; ++i)  // symmetrize away rounding asymmetry
    for (std::size_t j = 0; j <= i; ++j) z[i * n + j] = z[j * n + i] = 0.5f * (z[i * n + j] + z[j * n + i]) * scale;
  return z;
}

}  // namespace

void preprocessing::apply(float* rows, std::size_t n, std::size_t features, const runtime& rt) const {
  if (!zca_mean.empty() && (zca_mean.size() != features || zca_matrix.size() != features * features))
    throw error("preprocessing was fitted on " + std::to_string(zca_mean.size()) + " features, the data has " +
                std::to_string(features));
  if (pm1)  // exact: 2x is a doubling, and 2x - 1 rounds once
    for (std::size_t i = 0; i < n * features; ++i) rows[i] = 2.0f * rows[i] - 1.0f;
  if (gcn) gcn_rows(rows, n, features, gcn_scale, rt);
  if (zca_mean.empty()) return;
  std::vector<float> centred;
  for (std::size_t r0 = 0; r0 < n; r0 += chunk_rows) {
    const std::size_t m = std::min(chunk_rows, n - r0);
    centred.assign(rows + r0 * features, rows + (r0 + m) * features);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t f = 0; f < features; ++f) centred[r * features + f] -= zca_mean[f];
    matmul(centred.data(), features, 1, zca_matrix.data(), m, features, features, rows + r0 * features, rt);
  }
}

preprocessing fit_preprocessing(const dataset& train, bool gcn, bool zca, float zca_bias, const runtime& rt) {
  preprocessing p;
  p.gcn = gcn;
  if (!zca) return p;
  const std::size_t f = train.features, n = train.size();
  if (n < 2) throw error("ZCA whitening needs at least 2 training examples");
  if (f > 8192) throw error("ZCA whitening of " + std::to_string(f) + " features is too large");
  if (!(zca_bias > 0.0f)) throw error("ZCA bias must be positive");
  std::vector<float> chunk;
  auto load_chunk = [&](std::size_t r0, std::size_t m) {
    chunk.assign(train.x.begin() + static_cast<std::ptrdiff_t>(r0 * f),
                 train.x.begin() + static_cast<std::ptrdiff_t>((r0 + m) * f));
    if (gcn) gcn_rows(chunk.data(), m, f, p.gcn_scale, rt);
  };
  std::vector<double> mean(f, 0.0);
  for (std::size_t r0 = 0; r0 < n; r0 += chunk_rows) {
    const std::size_t m = std::min(chunk_rows, n - r0);
    load_chunk(r0, m);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t j = 0; j < f; ++j) mean[j] += chunk[r * f + j];
  }
  p.zca_mean.resize(f);
  for (std::size_t j = 0; j < f; ++j) p.zca_mean[j] = static_cast<float>(mean[j] / static_cast<double>(n));
  // Covariance, chunk by chunk: partial = Xc^T Xc in float, accumulated in double.
  std::vector<double> cov(f * f, 0.0);
  std::vector<float> partial(f * f);
  for (std::size_t r0 = 0; r0 < n; r0 += chunk_rows) {
    const std::size_t m = std::min(chunk_rows, n - r0);
    load_chunk(r0, m);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t j = 0; j < f; ++j) chunk[r * f + j] -= p.zca_mean[j];
    matmul(chunk.data(), 1, f, chunk.data(), f, f, m, partial.data(), rt);
    for (std::size_t i = 0; i < f * f; ++i) cov[i] += partial[i];
  }
  for (std::size_t i = 0; i < f * f; ++i) cov[i] /= static_cast<double>(n);
  for (std::size_t i = 0; i < f; ++i) cov[i * f + i] += zca_bias;
  p.zca_matrix = inverse_sqrt(cov, f, rt);
  return p;
}

}  // namespace fewmul
