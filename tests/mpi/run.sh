#!/bin/sh
# Data-parallel training over MPI (issue 19): `mpirun -n R fewmul train` for R = 1, 2, 3 writes the model
# file of the single-process run byte for byte; a run resumed with another R does too; a process that fails
# ends the job with a non-zero exit and a message naming it, and the checkpoint of the epoch before stays
# usable.   Usage: run.sh FEWMUL MPIEXEC MNIST_DIR
set -u
fewmul=$1
mpiexec=$2
data=$3
if [ ! -f "$data/train-images-idx3-ubyte" ]; then
  echo "mpi: no MNIST in $data (apps/scripts/fetch-data.sh mnist), skipped"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/fewmul_mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT
# CI runs as root on 2 cores: Open MPI refuses root without these and more processes than cores without
# --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Containers often forbid the cross-process reads of Open MPI's single-copy transport (CMA; "Read -1,
# expected ..., errno = 1"): copy through shared memory instead, which works everywhere.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export FEWMUL_MPI_TIMEOUT=120
run() { "$mpiexec" --oversubscribe -n "$@"; }
failures=0
fail() {
  echo "FAIL $1"
  sed 's/^/  | /' "$work/log" | tail -8
  failures=$((failures + 1))
}
# Stochastic weights, quantized backprop and dropout: every random draw must follow the example, not the rank.
common="train mnist --data $data --train-limit 600 --validation 100 --batch 50 --batch-parts 3
 --dropout-hidden 0.1 --threads 1 --quiet --bn-reestimate 200"
train="$common --width 0.05"

"$fewmul" $train --epochs 2 --save-model "$work/single.fwm" > "$work/log" 2>&1 || fail "single-process run"
for r in 1 2 3; do
  run $r "$fewmul" $train --epochs 2 --save-model "$work/r$r.fwm" > "$work/log" 2>&1 || fail "mpirun -n $r"
  cmp "$work/single.fwm" "$work/r$r.fwm" > /dev/null 2>&1 || fail "mpirun -n $r: model differs from the single-process run"
done

# Dense layers' weight gradients are computed in slices of their outputs (multiples of 32 rows; wider layers
# than above, so that every process has some). Sampled weights: each process updates its slice of the master
# weights and samples its rows; fp32 reads the master weights, so the slices are gathered every step.
for m in tc+qbp fp32; do
  wide="$common --width 0.1 --method $m --epochs 2"
  "$fewmul" $wide --save-model "$work/single_$m.fwm" > "$work/log" 2>&1 || fail "single-process run, $m"
  for r in 2 3; do
    run $r "$fewmul" $wide --save-model "$work/r${r}_$m.fwm" > "$work/log" 2>&1 || fail "mpirun -n $r, $m"
    cmp "$work/single_$m.fwm" "$work/r${r}_$m.fwm" > /dev/null 2>&1 ||
      fail "mpirun -n $r, $m: model differs from the single-process run"
  done
done

# One node folds through shared memory; several nodes send messages. The message path, on this node:
FEWMUL_MPI_SHARED_FOLD=0 run 2 "$fewmul" $train --epochs 2 --save-model "$work/messages.fwm" > "$work/log" 2>&1 ||
  fail "mpirun -n 2, folds by messages"
cmp "$work/single.fwm" "$work/messages.fwm" > /dev/null 2>&1 ||
  fail "mpirun -n 2, folds by messages: model differs from the single-process run"
run 3 "$fewmul" $train --epochs 2 --save-model "$work/r3.fwm" > "$work/log" 2>&1 || fail "mpirun -n 3"

# The data once per node: of the 3 processes on this one node, one loads ("loaded" lines: one), and the
# others' private memory (RssAnon, rank 0's report) stays below the shared rows' size, which a process holding
# its own copy of them would exceed.
loads=$(grep -c "loaded mnist once for the 3 processes of its node" "$work/log")
shared=$(sed -n 's/.*of its node (\([0-9.]*\) MB shared).*/\1/p' "$work/log")
private=$(sed -n 's/.*memory per process, private \/ resident MB://p' "$work/log")
if [ "$loads" != 1 ] || [ -z "$shared" ] || [ -z "$private" ] ||
  ! echo "$private" | tr ',' '\n' | awk -v shared="$shared" '
    { if ($2 != 0) { seen++; if ($3 >= shared) bad++ } }
    END { exit !(seen == 2 && bad == 0) }'; then
  fail "mpirun -n 3: the data is not held once per node (loads: $loads, shared MB: $shared, private:$private)"
fi

# A file that fails to load on the loading process ends the job with one message naming the rank and the file.
mkdir "$work/no-data"
run 3 "$fewmul" train mnist --data "$work/no-data" --batch-parts 3 --threads 1 --quiet > "$work/log" 2>&1
code=$?
if [ $code -eq 0 ] || [ "$(grep -c 'error: rank' "$work/log")" != 1 ] ||
  ! grep -q "error: rank 0 of 3: $work/no-data/train-images-idx3-ubyte: no such file" "$work/log"; then
  fail "a data file missing on the loading process (exit $code)"
fi

# More processes than parts: refused with the flag named, before any training.
run 4 "$fewmul" $train --epochs 1 > "$work/log" 2>&1
if [ $? -eq 0 ] || ! grep -q "rank [0-3] of 4: --batch-parts 3 is fewer than the 4 processes" "$work/log"; then
  fail "4 processes on 3 parts"
fi

# Processes started with different settings (here the seed): refused, naming the odd process.
run 2 sh -c "exec \"$fewmul\" $(echo $train) --epochs 1 --seed \$((1 + OMPI_COMM_WORLD_RANK))" > "$work/log" 2>&1
if [ $? -eq 0 ] || ! grep -q "of 2: process 1 of 2 holds other training/test data or settings" "$work/log"; then
  fail "processes with different settings"
fi

# Rank 1 of 2 fails in epoch 2: the job ends (no hang), non-zero, naming the rank and the cause. The
# checkpoint of epoch 1 then resumes, on 3 processes and on one, to the uninterrupted run's model.
FEWMUL_TEST_FAIL_RANK=1 run 2 "$fewmul" $train --epochs 2 --checkpoint "$work/run.ckpt" > "$work/log" 2>&1
code=$?
if [ $code -eq 0 ] || ! grep -q "error: rank 1 of 2: failure injected by FEWMUL_TEST_FAIL_RANK" "$work/log"; then
  fail "a failing rank (exit $code)"
fi
resume="train mnist --data $data --train-limit 600 --threads 1 --quiet --resume $work/run.ckpt"
run 3 "$fewmul" $resume --save-model "$work/resumed3.fwm" > "$work/log" 2>&1 || fail "mpirun -n 3 --resume"
cmp "$work/single.fwm" "$work/resumed3.fwm" > /dev/null 2>&1 || fail "resumed on 3 processes: model differs"
"$fewmul" $resume --save-model "$work/resumed1.fwm" > "$work/log" 2>&1 || fail "single-process --resume"
cmp "$work/single.fwm" "$work/resumed1.fwm" > /dev/null 2>&1 || fail "resumed on one process: model differs"

# Rank 2 of 3 stops without a word: the others' watchdog ends the job within the timeout.
start=$(date +%s)
FEWMUL_MPI_TIMEOUT=3 FEWMUL_TEST_STALL_RANK=2 run 3 "$fewmul" $train --epochs 1 > "$work/log" 2>&1
code=$?
if [ $code -eq 0 ] || [ $(($(date +%s) - start)) -gt 60 ] ||
  ! grep -q "rank [01] of 3: waited 3 s in a collective" "$work/log"; then
  fail "a stalled rank (exit $code)"
fi

[ $failures -eq 0 ] && echo "mpi: all cases passed"
exit $failures
