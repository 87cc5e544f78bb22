// Shapes of the layers of a network_architecture (see architecture.hpp).
#include "model/architecture.hpp"

#include <string>

#include "fewmul/error.hpp"

namespace fewmul::detail {

std::vector<planned_block> plan_network(const network_architecture& a) {
  if (a.height == 0 || a.width == 0 || a.channels == 0 || a.outputs == 0)
    throw error("network architecture needs a positive input shape and output count");
  std::size_t convolutions = 0;
  for (std::size_t channels : a.conv) convolutions += channels != 0;
  if (!a.conv_kernels.empty() && a.conv_kernels.size() != convolutions)
    throw error("the architecture lists " + std::to_string(a.conv_kernels.size()) + " kernel sizes for " +
                std::to_string(convolutions) + " convolutions");
  std::vector<planned_block> blocks;
  std::size_t h = a.height, w = a.width, c = a.channels, convolution = 0;
  for (std::size_t i = 0; i < a.conv.size(); ++i) {
    if (a.conv[i] == 0)
      throw error("a max-pool must follow a convolution (architecture entry " + std::to_string(i) + ")");
    planned_block b;
    b.convolution = true;
    b.key_index = i;
    b.conv.height = h;
    b.conv.width = w;
    b.conv.in_channels = c;
    b.conv.out_channels = a.conv[i];
    b.conv.kernel = a.conv_kernels.empty() ? 3 : a.conv_kernels[convolution];
    b.conv.same_padding = a.conv_same_padding;
    ++convolution;
    const std::size_t k = b.conv.kernel;
    if (k == 0 || k > 15 || (a.conv_same_padding && k % 2 == 0) || (!a.conv_same_padding && (k > h || k > w)))
      throw error("convolution " + std::to_string(convolution) + " of the architecture: kernel " + std::to_string(k) +
                  " does not fit its " + std::to_string(h) + "x" + std::to_string(w) + " input with " +
                  (a.conv_same_padding ? "same" : "valid") + " padding (odd kernels with same padding, at most 15)");
    h = b.conv.out_height();
    w = b.conv.out_width();
    c = a.conv[i];
    if (i + 1 < a.conv.size() && a.conv[i + 1] == 0) {
      if (h < 2 || w < 2)
        throw error("max-pooling needs maps of at least 2x2 (architecture entry " + std::to_string(i + 1) + " gets " +
                    std::to_string(h) + "x" + std::to_string(w) + ")");
      b.pool = true;
      if (a.fan_out_per_pool) b.conv.fan_out_pool = 4;
      h /= 2;
      w /= 2;
      ++i;
    }
    b.channels = c;
    b.positions = h * w;
    blocks.push_back(b);
  }
  std::vector<std::size_t> sizes = a.hidden;
  sizes.push_back(a.outputs);
  std::size_t width = h * w * c;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) throw error("dense layer " + std::to_string(i) + " of the architecture has no units");
    planned_block b;
    b.key_index = i;
    b.inputs = width;
    b.outputs = b.channels = sizes[i];
    b.output_layer = i + 1 == sizes.size();
    blocks.push_back(b);
    width = sizes[i];
  }
  return blocks;
}

double state_values(const std::vector<planned_block>& blocks) {
  double total = 0;
  for (const planned_block& b : blocks) {
    const double weights = b.convolution
                               ? static_cast<double>(b.conv.kernel * b.conv.kernel) *
                                     static_cast<double>(b.conv.in_channels) * static_cast<double>(b.conv.out_channels)
                               : static_cast<double>(b.inputs) * static_cast<double>(b.outputs);
    total += weights + 4.0 * static_cast<double>(b.channels);
  }
  return total;
}

}  // namespace fewmul::detail
