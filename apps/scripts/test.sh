#!/usr/bin/env bash
# Installs, builds, fetches MNIST (the training test uses a real subset) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash apps/scripts/setup.sh
bash apps/scripts/fetch-data.sh mnist build/data/mnist
cd build
ctest --output-on-failure --timeout 1200
