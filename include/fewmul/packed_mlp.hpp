#pragma once
// The dense-only name of packed_network (kept for existing callers): a BNN/QNN MLP is the special case of
// packed_network without convolutions.
#include "fewmul/packed_network.hpp"

namespace fewmul {

using packed_mlp = packed_network;

}  // namespace fewmul
