// Centring, global and local contrast normalization and ZCA whitening, fitted on a training set; the
// class-balanced SVHN validation split.
//
// LeCun LCN (pylearn2 lecun_lcn): with g the normalized 7x7 Gaussian (sigma 2) and zero padding outside the
// image, each value v becomes (v - (g*v)) / max(d, mean(d), 1e-4) with d = sqrt(g*(v^2)) and mean(d) its
// mean over the image's positions. pylearn2 convolves in "full" mode and crops 3 rows and columns on each
// side, which is a zero-padded "same" correlation (g is symmetric, so flipping it changes nothing).
#include <algorithm>
#include <array>
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

constexpr int lcn_radius = 3;  // pylearn2 LeCunLCN kernel_size = 7
constexpr double lcn_threshold = 1e-4;

// pylearn2 gaussian_filter(7): exp(-(x^2 + y^2) / (2 sigma^2)), sigma 2, normalized to sum 1 (its 1/Z
// factor cancels in the normalization).
std::array<double, 49> lcn_gaussian() {
  std::array<double, 49> g{};
  double sum = 0;
  for (int i = 0; i < 7; ++i)
    for (int j = 0; j < 7; ++j) {
      const double x = i - lcn_radius, y = j - lcn_radius;
      g[static_cast<std::size_t>(i * 7 + j)] = std::exp(-(x * x + y * y) / 8.0);
      sum += g[static_cast<std::size_t>(i * 7 + j)];
    }
  for (double& v : g) v /= sum;
  return g;
}

void lcn_rows(float* rows, std::size_t n, std::size_t features, const preprocessing& p, const runtime& rt) {
  const std::size_t h = p.lcn_height, w = p.lcn_width, positions = h * w, channels = features / positions;
  const std::array<double, 49> g = lcn_gaussian();
  parallel_rows(rt, n, 16, [&](std::size_t r0, std::size_t r1) {
    std::vector<double> mean(positions), denom(positions);
    for (std::size_t r = r0; r < r1; ++r) {
      float* x = rows + r * features;
      for (std::size_t c = 0; c < p.lcn_channels; ++c) {
        auto at = [&](std::size_t y, std::size_t xx) { return static_cast<double>(x[(y * w + xx) * channels + c]); };
        double denom_sum = 0;
        for (std::size_t y = 0; y < h; ++y)
          for (std::size_t xx = 0; xx < w; ++xx) {
            double m = 0, sq = 0;
            for (int dy = -lcn_radius; dy <= lcn_radius; ++dy) {
              const auto yy = static_cast<std::ptrdiff_t>(y) + dy;
              if (yy < 0 || yy >= static_cast<std::ptrdiff_t>(h)) continue;
              for (int dx = -lcn_radius; dx <= lcn_radius; ++dx) {
                const auto xs = static_cast<std::ptrdiff_t>(xx) + dx;
                if (xs < 0 || xs >= static_cast<std::ptrdiff_t>(w)) continue;
                const double v = at(static_cast<std::size_t>(yy), static_cast<std::size_t>(xs));
                const double weight = g[static_cast<std::size_t>((dy + lcn_radius) * 7 + dx + lcn_radius)];
                m += weight * v;
                sq += weight * v * v;
              }
            }
            mean[y * w + xx] = m;
            denom[y * w + xx] = std::sqrt(sq);
            denom_sum += denom[y * w + xx];
          }
        const double image_mean = denom_sum / static_cast<double>(positions);
        for (std::size_t q = 0; q < positions; ++q) {
          const double divisor = std::max({denom[q], image_mean, lcn_threshold});
          float& v = x[q * channels + c];
          v = static_cast<float>((static_cast<double>(v) - mean[q]) / divisor);
        }
      }
    }
  });
}

// Everything before ZCA, in place.
void apply_before_whitening(const preprocessing& p, float* rows, std::size_t n, std::size_t features,
                            const runtime& rt) {
  if (!p.center_mean.empty())
    parallel_rows(rt, n, 256, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t f = 0; f < features; ++f) rows[r * features + f] -= p.center_mean[f];
    });
  if (p.gcn) gcn_rows(rows, n, features, p.gcn_scale, rt);
  if (p.lcn_channels > 0) lcn_rows(rows, n, features, p, rt);
}

void check_features(const preprocessing& p, std::size_t features) {
  if (!p.center_mean.empty() && p.center_mean.size() != features)
    throw error("centring was fitted on " + std::to_string(p.center_mean.size()) + " features, the data has " +
                std::to_string(features));
  if (p.lcn_channels > 0) {
    const std::size_t positions = std::size_t{p.lcn_height} * p.lcn_width;
    if (positions == 0 || features % positions != 0 || p.lcn_channels > features / positions)
      throw error("local contrast normalization of " + std::to_string(p.lcn_height) + "x" +
                  std::to_string(p.lcn_width) + " images (" + std::to_string(p.lcn_channels) +
                  " channels) does not fit data of " + std::to_string(features) + " features");
  }
}

}  // namespace

void preprocessing::apply(float* rows, std::size_t n, std::size_t features, const runtime& rt) const {
  if (!zca_mean.empty() && (zca_mean.size() != features || zca_matrix.size() != features * features))
    throw error("preprocessing was fitted on " + std::to_string(zca_mean.size()) + " features, the data has " +
                std::to_string(features));
  check_features(*this, features);
  if (pm1)  // exact: 2x is a doubling, and 2x - 1 rounds once
    for (std::size_t i = 0; i < n * features; ++i) rows[i] = 2.0f * rows[i] - 1.0f;
  apply_before_whitening(*this, rows, n, features, rt);
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
  preprocessing_options o;
  o.gcn = gcn;
  o.zca = zca;
  o.zca_bias = zca_bias;
  return fit_preprocessing(train, o, rt);
}

preprocessing fit_preprocessing(const dataset& train, const preprocessing_options& options, const runtime& rt) {
  preprocessing p;
  const std::size_t f = train.features, n = train.size();
  if (options.center) {
    if (n == 0) throw error("centring needs training examples");
    std::vector<double> sum(f, 0.0);
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < f; ++j) sum[j] += train.example(r)[j];
    p.center_mean.resize(f);
    for (std::size_t j = 0; j < f; ++j) p.center_mean[j] = static_cast<float>(sum[j] / static_cast<double>(n));
  }
  p.gcn = options.gcn;
  if (options.gcn) {
    if (!std::isfinite(options.gcn_scale) || !(options.gcn_scale > 0.0f))
      throw error("the GCN scale must be a positive number");
    p.gcn_scale = options.gcn_scale;
  }
  if (options.lcn_channels > 0) {
    if (train.height == 0 || train.width == 0 || train.channels == 0)
      throw error("local contrast normalization needs images (the data has no image shape)");
    if (options.lcn_channels > train.channels)
      throw error("local contrast normalization of " + std::to_string(options.lcn_channels) +
                  " channels, the images have " + std::to_string(train.channels));
    p.lcn_height = train.height;
    p.lcn_width = train.width;
    p.lcn_channels = options.lcn_channels;
  }
  if (!options.zca) return p;
  const float zca_bias = options.zca_bias;
  if (n < 2) throw error("ZCA whitening needs at least 2 training examples");
  if (f > 8192) throw error("ZCA whitening of " + std::to_string(f) + " features is too large");
  if (!(zca_bias > 0.0f)) throw error("ZCA bias must be positive");
  std::vector<float> chunk;
  auto load_chunk = [&](std::size_t r0, std::size_t m) {
    chunk.assign(train.example(r0), train.example(r0) + m * f);
    apply_before_whitening(p, chunk.data(), m, f, rt);
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

dataset svhn_balanced_split(const dataset& train, const dataset& extra, std::size_t per_class_train,
                            std::size_t per_class_extra) {
  if (train.features != extra.features)
    throw error("SVHN extra images have " + std::to_string(extra.features) + " features, train images " +
                std::to_string(train.features));
  // Per class, a shuffled list of its examples (Fisher-Yates with the counter hash, a fixed key as
  // pylearn2's fixed seed); the first per_class of each go to validation.
  auto held_out = [](const dataset& d, std::size_t per_class, std::uint64_t key, const char* which) {
    std::vector<char> chosen(d.size(), 0);
    for (std::uint8_t label = 0; label < 10; ++label) {
      std::vector<std::uint32_t> members;
      for (std::size_t i = 0; i < d.size(); ++i)
        if (d.y[i] == label) members.push_back(static_cast<std::uint32_t>(i));
      if (members.size() < per_class)
        throw error(std::string("SVHN ") + which + " has " + std::to_string(members.size()) + " images of digit " +
                    std::to_string(label) + ", the balanced validation set takes " + std::to_string(per_class));
      for (std::size_t i = members.size(); i > 1; --i)
        std::swap(members[i - 1], members[kernels::counter_hash(key + label, static_cast<std::uint32_t>(i)) % i]);
      for (std::size_t k = 0; k < per_class; ++k) chosen[members[k]] = 1;
    }
    return chosen;
  };
  const std::vector<char> from_train = held_out(train, per_class_train, 0x5648'4e00, "train");
  const std::vector<char> from_extra = held_out(extra, per_class_extra, 0x5648'4e80, "extra");
  dataset out;
  out.features = train.features;
  out.classes = train.classes;
  out.height = train.height;
  out.width = train.width;
  out.channels = train.channels;
  const std::size_t total = train.size() + extra.size();
  out.x.reserve(total * out.features);
  out.y.reserve(total);
  auto append = [&](const dataset& d, const std::vector<char>& chosen, char want) {
    for (std::size_t i = 0; i < d.size(); ++i)
      if (chosen[i] == want) {
        out.x.insert(out.x.end(), d.example(i), d.example(i) + d.features);
        out.y.push_back(d.y[i]);
      }
  };
  append(train, from_train, 0);
  append(extra, from_extra, 0);
  append(train, from_train, 1);
  append(extra, from_extra, 1);
  return out;
}

}  // namespace fewmul
