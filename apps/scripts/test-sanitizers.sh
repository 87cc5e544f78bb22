#!/usr/bin/env bash
# Runs the test suite built with clang under AddressSanitizer + UndefinedBehaviorSanitizer, and the
# threaded tests (bit-identity across thread counts, training) under ThreadSanitizer on the
# std::thread runtime (see below); a build
# directory each (build/asan, build/tsan). Needs the MNIST files in build/data/mnist (apps/scripts/test.sh
# fetches them) for the real-data test.
set -euo pipefail
cd "$(dirname "$0")/../.."
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=""
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $need
fi
mnist="$PWD/build/data/mnist"
configure() {  # build dir, sanitizer flags, extra cmake arguments
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_CXX_FLAGS="$2 -fno-omit-frame-pointer" -DCMAKE_EXE_LINKER_FLAGS="$2" \
    -DFEWMUL_BUILD_BENCH=OFF -DFEWMUL_BUILD_APPS=OFF -DFEWMUL_MNIST_DIR="$mnist" ${3:-}
  cmake --build "$1" --target fewmul_tests
}
configure build/asan "-fsanitize=address,undefined -fno-sanitize-recover=undefined"
(cd build/asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure --timeout 1800 -E installed_package)
# oneTBB's prebuilt library is not instrumented, so TSan cannot see its synchronization and reports
# its task hand-offs as races; this build runs the same parallel code on the std::thread runtime
# (FEWMUL_USE_TBB=OFF), whose every synchronization TSan sees.
configure build/tsan "-fsanitize=thread" -DFEWMUL_USE_TBB=OFF
(cd build/tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
   ctest --output-on-failure --timeout 1800 -R "bit-identical|thread|learns|resum")
