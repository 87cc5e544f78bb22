#!/usr/bin/env bash
# Installs the Debian packages fewmul needs (only those missing) and builds it in build/.
#   apps/scripts/setup.sh            Release build of the library, CLI, tests and benchmarks
# python3-matplotlib only draws the figures of apps/scripts/plot.py (their test skips without it).
# Environment: BUILD_DIR (default build), CMAKE_ARGS (extra configure arguments).
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir=${BUILD_DIR:-build}

packages="g++ cmake ninja-build pkg-config libxsimd-dev libtbb-dev libbenchmark-dev doctest-dev libcli11-dev zlib1g-dev libspng-dev libopenblas-dev"
packages="$packages python3-matplotlib"
# Open MPI: the CLI's data-parallel training (mpirun -n R fewmul train) and its test; the library needs no MPI.
packages="$packages libopenmpi-dev openmpi-bin"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm fetches the datasets; Debian's npm only if no Node.js toolchain is installed already.
command -v npm >/dev/null || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing$missing"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
cmake --build "$build_dir"
