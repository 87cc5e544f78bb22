#!/usr/bin/env bash
# The main job on a fresh machine: install, build, fetch MNIST, train the paper's MLP with
# BinaryConnect + quantized backprop for a few epochs, report the test error, export the packed model
# to build/mnist.fwm and evaluate that file.
#   apps/scripts/quickstart.sh [extra fewmul train flags, e.g. --epochs 20 --method tc+qbp]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash apps/scripts/setup.sh
bash apps/scripts/fetch-data.sh mnist build/data/mnist
build/fewmul train mnist --method bc+qbp --epochs 3 --data build/data/mnist --save-model build/mnist.fwm "$@"
# The exported, packed model reproduces the run's test_error_packed exactly:
exec build/fewmul eval build/mnist.fwm --data build/data/mnist
