#pragma once
/// Umbrella header of the fewmul engine.
#include "fewmul/collective.hpp"
#include "fewmul/data.hpp"
#include "fewmul/error.hpp"
#include "fewmul/isa.hpp"
#include "fewmul/kernels.hpp"
#include "fewmul/model.hpp"
#include "fewmul/network.hpp"
#include "fewmul/packed_mlp.hpp"
#include "fewmul/packed_network.hpp"
#include "fewmul/runtime.hpp"
#include "fewmul/tensor.hpp"
#include "fewmul/train.hpp"
