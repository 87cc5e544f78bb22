#!/bin/sh
# Data-parallel training on one machine (issue 19): epoch time of the MNIST MLP for R processes x T threads
# with R x T = the cores, the same minibatch parts in every run (so the same arithmetic and the same bits),
# the traffic of the collectives and each process's private / resident memory (the node's processes share one
# copy of the data; a single node's folds go through shared memory, and once more by messages as over several
# nodes: FEWMUL_MPI_SHARED_FOLD=0). Also one process without parts (--batch-parts 1), the cost of the
# parts themselves. Take it where nothing else runs (flock /work/timing.lock on the shared machine).
#   Usage: [REPEAT=k] bench/mpi_scaling.sh [FEWMUL] [MNIST_DIR] [extra train flags...]
set -eu
fewmul=${1:-build/fewmul}
data=${2:-build/data/mnist}
[ $# -ge 2 ] && shift 2 || shift $#
cores=$(nproc)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# --epochs 2: the first epoch warms up (page faults, packed buffers); the second is reported.
train="train mnist --data $data --epochs 2 --quiet $*"
report() {  # label, log
  epoch=$(grep '"epoch": 2' "$2" | sed 's/.*"seconds": \([0-9.]*\), "images_per_s": \([0-9]*\).*/\1 s, \2 images\/s/')
  traffic=$(grep 'collectives' "$2" | sed 's/fewmul: //')
  memory=$(grep 'memory per process' "$2" | sed 's/fewmul: //')
  echo "$1: epoch 2: $epoch${traffic:+; $traffic}${memory:+; $memory}"
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# REPEAT=k runs the whole set k times, interleaved, so that a load that comes and goes hits every setting.
round=1
while [ $round -le "${REPEAT:-1}" ]; do
  "$fewmul" $train --threads "$cores" --batch-parts 1 > "$log" 2>&1 || { tail -3 "$log"; exit 1; }
  report "1 process x $cores threads, 1 part" "$log"
  r=1
  while [ $r -le "$cores" ]; do
    if [ $((cores % r)) -eq 0 ]; then
      mpirun --bind-to none -n $r "$fewmul" $train --threads $((cores / r)) --batch-parts "$cores" > "$log" 2>&1 ||
        { tail -3 "$log"; exit 1; }
      report "$r processes x $((cores / r)) threads, $cores parts" "$log"
      if [ $r -gt 1 ]; then  # the message path of a job over several nodes, on this one
        FEWMUL_MPI_SHARED_FOLD=0 mpirun --bind-to none -n $r "$fewmul" $train --threads $((cores / r)) \
          --batch-parts "$cores" > "$log" 2>&1 || { tail -3 "$log"; exit 1; }
        report "$r processes x $((cores / r)) threads, $cores parts, folds by messages" "$log"
      fi
    fi
    r=$((r * 2))
  done
  round=$((round + 1))
done
