#!/usr/bin/env bash
# Cross-builds fewmul for AArch64 (NEON kernels) and runs the kernel and engine tests under
# qemu-aarch64. Installs g++-aarch64-linux-gnu, qemu-user and the arm64 multiarch -dev packages.
# The build runs parallel tasks in order on one thread (FEWMUL_USE_TBB=OFF): oneTBB's workers spin
# without progress under qemu-user. Kernels, layers and training are the same code otherwise.
# Timings under emulation mean nothing; this checks correctness only.
set -euo pipefail
cd "$(dirname "$0")/../.."
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=""
for p in g++-aarch64-linux-gnu qemu-user zlib1g-dev:arm64 libbenchmark-dev:arm64 libspng-dev:arm64; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
  echo "test-aarch64: installing$need"
  dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $need
fi
build_dir=${BUILD_DIR:-build/aarch64}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/.ci/aarch64-toolchain.cmake" -DFEWMUL_BUILD_APPS=OFF -DFEWMUL_USE_TBB=OFF -DFEWMUL_STD_THREADS=OFF
cmake --build "$build_dir"
readelf -h "$build_dir/tests/fewmul_tests" | grep -q AArch64
# Everything but the real-MNIST run (it needs the data files and minutes of emulated time) and the
# data-parallel tests, whose threads standing in for processes crawl under qemu-user (minutes per test where
# x86 takes a second); they check how a minibatch is split and folded, which no ISA changes, and run on x86.
cd "$build_dir"
ctest --output-on-failure --timeout 1200 -E 'real MNIST|data-parallel|minibatch parts|more processes|processes holding'
