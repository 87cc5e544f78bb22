#pragma once
// The weight layers an architecture describes, as shapes: what make_network builds and what a checkpoint
// of it must hold, computed without allocating anything that grows with the layer sizes (so a lying
// checkpoint is refused before its network is built).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fewmul/network.hpp"
#include "fewmul/train.hpp"

namespace fewmul::detail {

/// One weight layer with what follows it: an optional 2x2 max-pool (convolutions), batch norm over
/// `channels` channels at `positions` positions, and the activation unless `output_layer`.
struct planned_block {
  bool convolution = false;
  conv_shape conv;                      ///< convolution: its shape
  bool pool = false;                    ///< convolution: a 2x2 max-pool of its output follows
  std::size_t inputs = 0, outputs = 0;  ///< dense layer: sizes
  std::size_t channels = 0, positions = 1;
  bool output_layer = false;
  std::size_t key_index = 0;  ///< index of the entry in network_architecture::conv or of the dense layer
};

/// The blocks of `a` in order. Throws fewmul::error on impossible shapes (a pool first or of a map
/// smaller than 2x2, a kernel larger than a valid-padded map, an even kernel with same padding, a kernel
/// list of the wrong length, zero sizes).
std::vector<planned_block> plan_network(const network_architecture& a);

/// Values in network::snapshot() of make_network(a): weights, and per batch norm scale, shift, mean and
/// variance. As a double, so an implausible architecture cannot overflow it.
double state_values(const std::vector<planned_block>& blocks);

}  // namespace fewmul::detail
