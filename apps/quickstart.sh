#!/usr/bin/env bash
# The main job on a fresh machine: install, build, fetch MNIST, train the paper's MLP with
# BinaryConnect + quantized backprop for a few epochs and report the test error.
#   apps/quickstart.sh [extra fewmul train flags, e.g. --epochs 20 --method tc+qbp]
set -euo pipefail
cd "$(dirname "$0")/.."
bash apps/setup.sh
bash apps/fetch-data.sh mnist build/data/mnist
exec build/fewmul train mnist --method bc+qbp --epochs 3 --data build/data/mnist "$@"
