#!/usr/bin/env bash
# The MNIST CNN's conv layers, ember (both CPU engines: oneDNN and im2col + OpenBLAS) beside
# PyTorch's CPU build, in one run: forward, data gradient, weight gradient, and weight + bias gradients of
# conv 1->32 3x3 on 1x28x28 and conv 32->64 3x3 on 32x26x26 at batch 64, at each thread count.
#   tools/bench/conv_layers.sh [--build DIR] [--threads "1 2"] [--reps N] [--batch-size B]
# PYTHON=/path/to/python picks the PyTorch (default: Debian's /usr/bin/python3 with python3-torch).
# Prints every JSON line, then a table: each engine's time and its ratio to PyTorch's (below 1:
# ember is faster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" threads="1 2" reps=20 batch=64
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "conv_layers.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
bench="$build/tools/ember-bench"
[ -x "$bench" ] || { echo "conv_layers.sh: $bench not found: build ember first" >&2; exit 2; }
py=${PYTHON:-/usr/bin/python3}
"$py" -c "import torch" 2>/dev/null || { echo "conv_layers.sh: $py has no torch (apt-get install python3-torch)" >&2; exit 2; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'); batch $batch; best of $reps"
for t in $threads; do
  "$bench" conv-layers --threads "$t" --reps "$reps" --batch-size "$batch" | tee -a "$out"
  EMBER_CPU_CONV=im2col "$bench" conv-layers --threads "$t" --reps "$reps" --batch-size "$batch" | tee -a "$out"
  "$py" "$here/torch_conv_layers.py" --threads "$t" --reps "$reps" --batch-size "$batch" | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
torch = {(r["threads"], r["layer"], r["direction"]): r["ms"] for r in rows if r["framework"] == "torch"}
ember = {(r["engine"], r["threads"], r["layer"], r["direction"]): r["ms"] for r in rows if r["framework"] == "ember"}
print()
print("| threads | layer | direction | PyTorch ms | oneDNN ms | oneDNN / PyTorch | im2col ms | im2col / PyTorch |")
print("|---|---|---|---|---|---|---|---|")
for (t, layer, d), tm in torch.items():
    a, b = ember.get(("onednn", t, layer, d)), ember.get(("im2col", t, layer, d))
    fmt = lambda v: f"{v:.3f} | {v / tm:.2f}" if v is not None else "- | -"
    print(f"| {t} | {layer} | {d} | {tm:.3f} | {fmt(a)} | {fmt(b)} |")
PY
