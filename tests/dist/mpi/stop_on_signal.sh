#!/bin/bash
# ember-mnist --distributed under mpirun: SIGTERM to ONE rank (rank 1) stops BOTH ranks after the
# same step (the ranks vote each step), rank 0 writes the mid-epoch checkpoint, and that checkpoint
# resumes in a single process to the end of the epoch.
# usage: stop_on_signal.sh MPIRUN EMBER_MNIST MNIST_DATA_DIR
set -u
mpirun=$1 mnist=$2 data=$3
tmp=$(mktemp -d)
trap 'kill -KILL $launcher 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; echo "--- rank 0 output:"; tail -c 2000 "$tmp/out" | tr '\r' '\n' | tail -20; exit 1; }

# Enough epochs that the run is still going when the signal comes (an epoch of data/mnist takes
# well under a second on a quiet machine).
common=(--data "$data" --device cpu --hidden 64 --epochs 20 --threads 1)
"$mpirun" -np 2 --oversubscribe --allow-run-as-root --mca btl self,vader,tcp -x OPENBLAS_NUM_THREADS=1 \
  -x EMBER_DIST_TIMEOUT=30 "$mnist" --distributed "${common[@]}" --save "$tmp/run.ckpt" >"$tmp/out" 2>&1 &
launcher=$!

# Rank 1: the ember-mnist process whose environment says OMPI_COMM_WORLD_RANK=1.
rank1=""
for _ in $(seq 600); do
  for pid in $(pgrep -f -- "$tmp/run.ckpt"); do
    if [ "$pid" != "$launcher" ] && tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 &&
       [ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$mnist")" ]; then rank1=$pid; fi
  done
  # Training has started once rank 0's progress bar shows (the handlers are installed long before).
  [ -n "$rank1" ] && grep -q 'epoch 1/20 \[' "$tmp/out" && break
  kill -0 $launcher 2>/dev/null || fail "the run ended before it could be interrupted"
  sleep 0.1
done
[ -n "$rank1" ] || fail "rank 1 not found or training did not start within 60 s"
kill -TERM "$rank1"
wait $launcher
rc=$?
[ $rc -ne 0 ] || fail "mpirun exited 0 after an interrupted run (the ranks exit 130)"
grep -q 'interrupted at epoch [0-9]*, step [0-9]*: checkpoint saved to' "$tmp/out" ||
  fail "rank 0 did not stop with a checkpoint after rank 1 got SIGTERM"
[ -s "$tmp/run.ckpt" ] || fail "no checkpoint file"
where=$(grep -o 'interrupted at epoch [0-9]*, step [0-9]*' "$tmp/out")
! grep -q 'final test accuracy' "$tmp/out" || fail "rank 0 finished the whole run: it did not stop"
# One process with the global batch (2 x 64) continues the 2-rank run.
"$mnist" "${common[@]}" --batch-size 128 --resume "$tmp/run.ckpt" --quiet >"$tmp/resume" 2>&1 || {
  cat "$tmp/resume"; fail "resuming the interrupted run's checkpoint failed"; }
grep -q 'test accuracy' "$tmp/resume" || { cat "$tmp/resume"; fail "the resumed run printed no final report"; }
echo "STOP-ON-SIGNAL-PASSED (both ranks stopped: $where; resumed to the end of the run)"
