#pragma once
// What the layer sources share: file tags, the input check, and readers of the layers defined
// outside layers.cpp.
#include <memory>
#include <string>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"

namespace fewmul::detail {

class byte_reader;

enum layer_tag : std::uint32_t {
  tag_dense = 1,
  tag_batch_norm = 2,
  tag_relu = 3,
  tag_hard_tanh = 4,
  tag_conv2d = 5,
  tag_max_pool = 6,
  tag_batch_norm_spatial = 7,
  tag_sign = 8,
};

/// Throws fewmul::error unless x has the layer's input width.
inline void check_width(const layer& l, const matrix& x) {
  if (x.cols != l.input_size())
    throw error("layer " + std::to_string(l.index) + " (" + l.describe() + ") got inputs of width " +
                std::to_string(x.cols) + ", expected " + std::to_string(l.input_size()));
}

std::unique_ptr<layer> read_conv2d(byte_reader& in, bool packed);
std::unique_ptr<layer> read_max_pool(byte_reader& in);

}  // namespace fewmul::detail
