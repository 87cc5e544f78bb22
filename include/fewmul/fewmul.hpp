#pragma once
/// Umbrella header of the fewmul engine: the public API. The kernel layer (fewmul/kernels.hpp: the
/// dispatch table, the random-number and level helpers) is not part of it; a layer of your own that calls
/// the engine's kernels through step_context::kernels includes it itself.
#include "fewmul/collective.hpp"
#include "fewmul/data.hpp"
#include "fewmul/error.hpp"
#include "fewmul/isa.hpp"
#include "fewmul/model.hpp"
#include "fewmul/network.hpp"
#include "fewmul/packed_mlp.hpp"
#include "fewmul/packed_network.hpp"
#include "fewmul/runtime.hpp"
#include "fewmul/sample_mode.hpp"
#include "fewmul/tensor.hpp"
#include "fewmul/train.hpp"
