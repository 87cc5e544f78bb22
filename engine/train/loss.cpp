#include <cmath>

#include "fewmul/train.hpp"

namespace fewmul {

std::size_t count_errors(const matrix& output, const std::uint8_t* labels) {
  std::size_t errors = 0;
  for (std::size_t b = 0; b < output.rows; ++b) {
    const float* row = output.row(b);
    std::size_t best = 0;
    for (std::size_t c = 1; c < output.cols; ++c)
      if (row[c] > row[best]) best = c;
    errors += best != labels[b];
  }
  return errors;
}

float loss_and_gradient(loss_kind kind, const matrix& output, const std::uint8_t* labels, matrix& grad,
                        std::size_t& errors, std::size_t batch_rows) {
  const float scale = 1.0f / static_cast<float>(batch_rows != 0 ? batch_rows : output.rows);
  grad.resize(output.rows, output.cols);
  errors = count_errors(output, labels);
  double total = 0.0;
  if (kind == loss_kind::squared_hinge) {
    // Summed over output units, averaged over the batch.
    for (std::size_t b = 0; b < output.rows; ++b)
      for (std::size_t c = 0; c < output.cols; ++c) {
        const float t = c == labels[b] ? 1.0f : -1.0f;
        const float margin = 1.0f - t * output.at(b, c);
        const float hinge = margin <= 0.0f ? 0.0f : margin;  // a NaN margin stays NaN (and stops training)
        total += static_cast<double>(hinge) * hinge;
        grad.at(b, c) = -2.0f * t * hinge * scale;
      }
    return static_cast<float>(total * scale);
  }
  for (std::size_t b = 0; b < output.rows; ++b) {
    const float* row = output.row(b);
    float peak = row[0];
    for (std::size_t c = 1; c < output.cols; ++c) peak = row[c] > peak ? row[c] : peak;
    float sum = 0.0f;
    for (std::size_t c = 0; c < output.cols; ++c) sum += std::exp(row[c] - peak);
    const float log_sum = std::log(sum) + peak;
    total += log_sum - row[labels[b]];
    for (std::size_t c = 0; c < output.cols; ++c)
      grad.at(b, c) = (std::exp(row[c] - log_sum) - (c == labels[b] ? 1.0f : 0.0f)) * scale;
  }
  return static_cast<float>(total * scale);
}

}  // namespace fewmul
