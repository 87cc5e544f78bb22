#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer) and fuzzes every
# parser, starting from small valid seeds. Exits non-zero on any crash, sanitizer report, leak, timeout
# or oversized allocation; the input that caused it is left as build/fuzz/<target>-*.
#   bash apps/scripts/fuzz.sh                       CI: FUZZ_RUNS (default 20000) executions per target with a
#                                           fixed FUZZ_SEED (default 1), so CI's result is reproducible
#   FUZZ_RUNS=0 FUZZ_SECONDS=600 FUZZ_SEED=0 bash apps/scripts/fuzz.sh   a longer, time-bounded, random run
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${FUZZ_RUNS:-20000}
seconds=${FUZZ_SECONDS:-0}
seed=${FUZZ_SEED:-1}
limits="-seed=$seed"
[ "$runs" != 0 ] && limits="$limits -runs=$runs"
[ "$seconds" != 0 ] && limits="$limits -max_total_time=$seconds"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=""
for p in clang libclang-rt-14-dev cmake ninja-build pkg-config libxsimd-dev zlib1g-dev libspng-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $need
fi
build=build/fuzz
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -DFEWMUL_FUZZING" \
  -DFEWMUL_BUILD_FUZZERS=ON -DFEWMUL_BUILD_TESTS=OFF -DFEWMUL_BUILD_BENCH=OFF -DFEWMUL_BUILD_APPS=OFF -DFEWMUL_USE_TBB=OFF
cmake --build "$build"
rm -rf "$build/seeds"
"$build/tests/fuzz/fewmul_fuzz_seeds" "$build/seeds"
cp tests/data/svhn_format_test.mat "$build/seeds/svhn_mat/"
status=0
for target in idx cifar_batch cifar_png svhn_mat model settings; do
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  log="$build/fuzz_$target.log"
  if (cd "$build" && "./tests/fuzz/fuzz_$target" $limits -max_len=1048576 -rss_limit_mb=3072 \
        -malloc_limit_mb=1536 -timeout=20 -artifact_prefix="$target-" "corpus/$target" "seeds/$target") > "$log" 2>&1; then
    done_runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1)
    echo "fuzz $target: ${done_runs:-?}(s), no crash"
  else
    echo "fuzz $target: FAILED (see $log)"
    tail -30 "$log"
    status=1
  fi
done
exit $status
