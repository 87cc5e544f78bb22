#!/bin/sh
# Hostile use of the CLI (issue 17): output paths, flag values, resume conflicts, file-size limits, locks.
# Each case asserts the exit code, the message, and that no file around (the data, the work directory)
# changed unless it is the run's own output.   Usage: run.sh FEWMUL MNIST_DIR
set -u
fewmul=$1
data=$2
if [ ! -f "$data/train-images-idx3-ubyte" ]; then
  echo "hostile: no MNIST in $data (apps/scripts/fetch-data.sh mnist), skipped"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/fewmul_hostile.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
train="train mnist --data $data --train-limit 1000 --validation 200 --hidden 32 --epochs 1 --bn-reestimate 0 --quiet"

sums() { find "$work" "$data" -type f ! -name log | LC_ALL=C sort | xargs cksum; }

# expect NAME EXIT REGEX COMMAND...: runs COMMAND, checks its exit code, its output against REGEX and
# that no file changed.
expect() {
  name=$1 code=$2 regex=$3
  shift 3
  before=$(sums)
  "$@" > "$work/log" 2>&1
  got=$?
  after=$(sums)
  if [ "$got" != "$code" ] || ! grep -Eq -- "$regex" "$work/log" || [ "$before" != "$after" ]; then
    echo "FAIL $name: exit $got (expected $code), files changed: $([ "$before" = "$after" ] && echo no || echo yes)"
    sed 's/^/  | /' "$work/log" | tail -5
    failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

# The run's own files, made once.
$fewmul $train --checkpoint "$work/run.ckpt" --save-model "$work/run.fwm" > /dev/null 2>&1 || {
  echo "FAIL: the reference run did not train"
  exit 1
}
cp "$data/t10k-labels-idx1-ubyte" "$work/labels"
mkdir "$work/dir"

# Output paths: only nothing or a fewmul file of the same kind, checked before any work.
expect "checkpoint onto a data file" 1 "--checkpoint .*/labels: exists and is not a fewmul file" \
  $fewmul $train --checkpoint "$work/labels"
expect "checkpoint onto the dataset itself" 1 "not a fewmul file" \
  $fewmul $train --checkpoint "$data/train-images-idx3-ubyte"
expect "model onto a device" 1 "--save-model /dev/null: is a device" $fewmul $train --save-model /dev/null
[ -c /dev/null ] || { echo "FAIL: /dev/null is no longer a device"; failures=$((failures + 1)); }
expect "model onto a directory" 1 "is a directory" $fewmul $train --save-model "$work/dir"
expect "model onto a checkpoint" 1 "exists and is a fewmul checkpoint" $fewmul $train --save-model "$work/run.ckpt"
expect "checkpoint onto a model" 1 "exists and is a fewmul model" $fewmul $train --checkpoint "$work/run.fwm"
expect "checkpoint and model on one path" 1 "names the same file as --checkpoint" \
  $fewmul $train --checkpoint "$work/new" --save-model "$work/new"
expect "model onto the checkpoint resumed" 1 "is the checkpoint this run resumes from" \
  $fewmul train mnist --data "$data" --train-limit 1000 --resume "$work/run.ckpt" --save-model "$work/run.ckpt"
expect "export onto its own checkpoint" 1 "is the checkpoint being read" $fewmul export "$work/run.ckpt" "$work/run.ckpt"
expect "output in a missing directory, found before training" 1 "directory .*/missing does not exist" \
  $fewmul $train --checkpoint "$work/missing/x.ckpt"
grep -q '"epoch"' "$work/log" && { echo "FAIL: trained before refusing the output"; failures=$((failures + 1)); }
expect "convert-cifar10 onto a file" 1 "exists and is not a directory" $fewmul convert-cifar10 "$work/dir" "$work/labels"
cp "$work/labels" "$work/dir/data_batch_1.bin"
expect "convert-cifar10 over foreign batches" 1 "data_batch_1.bin: exists and is not a CIFAR-10 batch" \
  $fewmul convert-cifar10 "$work/dir" "$work/dir"
rm "$work/dir/data_batch_1.bin"

# Concurrent runs: a checkpoint path owned by a live run is refused.
flock "$work/run.ckpt.lock" sleep 5 &
locker=$!
sleep 0.3
expect "checkpoint locked by another run" 1 "in use by another fewmul run" \
  $fewmul $train --checkpoint "$work/run.ckpt"
kill $locker 2> /dev/null
wait $locker 2> /dev/null
rm -f "$work/run.ckpt.lock"

# A killed run's temporary is removed and reported; the model is then replaced (the run's own output).
: > "$work/run.fwm.tmp.999999999.0"
$fewmul export "$work/run.ckpt" "$work/run.fwm" > "$work/log" 2>&1
if ! grep -q "removed .*run.fwm.tmp.999999999.0" "$work/log" || [ -e "$work/run.fwm.tmp.999999999.0" ]; then
  echo "FAIL stale temporary: not removed"
  failures=$((failures + 1))
else
  echo "ok   stale temporary removed and reported"
fi

# A file-size limit fails the write with an error, not SIGXFSZ, and leaves no temporary.
(ulimit -f 16; $fewmul $train --checkpoint "$work/big.ckpt") > "$work/log" 2>&1
code=$?
if [ "$code" != 1 ] || ! grep -q "writing failed" "$work/log" || ls "$work" | grep -q "big.ckpt"; then
  echo "FAIL file-size limit: exit $code"
  tail -3 "$work/log"
  failures=$((failures + 1))
else
  echo "ok   file-size limit is an error"
fi

# Flag values: NaN, absurd, negative and wrapping values name the flag (exit 105: bad flag).
expect "--lr nan" 105 "--lr: must be a number in \[1e-06, 1000\], not nan" $fewmul $train --lr nan
expect "--lr 1e-50" 105 "--lr: must be a number in" $fewmul $train --lr 1e-50
expect "--lr 1e39" 105 "--lr: .*not 1e\+39" $fewmul $train --lr 1e39
expect "--lr-decay nan" 105 "--lr-decay: must be a number" $fewmul $train --lr-decay nan
expect "--dropout-hidden nan" 105 "--dropout-hidden: must be a number" $fewmul $train --dropout-hidden nan
expect "--momentum nan" 105 "--momentum: must be a number" $fewmul $train --momentum nan
expect "--train-limit -1" 105 "--train-limit: must be a whole number" $fewmul $train --train-limit -1
expect "--seed 2^64" 105 "--seed: must be a whole number in \[0, 18446744073709551615\]" \
  $fewmul $train --seed 18446744073709551616

# Issue 15's network and data flags: refused where they cannot apply, before any work.
expect "--convnet for the MNIST MLP" 1 "--convnet applies to cifar10 and svhn" $fewmul $train --convnet lin
expect "--convnet of no paper" 105 "--convnet" $fewmul $train --convnet resnet
expect "--train-limit cutting the SVHN validation tail" 1 "--train-limit cannot be combined with --svhn-extra" \
  $fewmul train svhn --data "$work/dir" --svhn-extra --train-limit 1000
expect "--qbp-authors at the top exponent" 1 "--qbp-kmax must be below 15" $fewmul $train --qbp-authors --qbp-kmax 15

# Resume: flags that contradict the checkpoint are refused naming both values.
resume="train mnist --data $data --train-limit 1000 --resume $work/run.ckpt"
expect "resume with another --batch" 1 "--batch 100 contradicts .*run.ckpt, a run with --batch 200" \
  $fewmul $resume --batch 100
expect "resume with another --method" 1 "--method fp32 contradicts" $fewmul $resume --method fp32
expect "resume with --width" 1 "--width cannot be given with --resume" $fewmul $resume --width 0.5
expect "resume with another --qbp-authors" 1 "--qbp-authors on contradicts" $fewmul $resume --qbp-authors
# The same number of minibatches (4 of 200) from other data: 900 training examples instead of 800.
expect "resume on other data (--train-limit)" 1 "written for 800 training examples, this run has 900" \
  $fewmul train mnist --data "$data" --train-limit 1100 --resume "$work/run.ckpt" --epochs 2 --quiet

[ "$failures" = 0 ] && echo "hostile: all cases passed" || echo "hostile: $failures failed"
exit "$failures"
