#!/usr/bin/env bash
# The CNN side by side with PyTorch on this machine, in one run:
#   tools/bench/convnet.sh [--build DIR] [--device cpu|cuda] [--threads "1 2"] [--reps N] [--python PY] [--precision fp32|bf16]
# For each thread count: ember-bench cnn-step and tools/bench/torch_convnet.py --mode step (one
# training step of the classic MNIST CNN at batch 64, and each convolution's forward and backward),
# then a table of ratios ember / PyTorch (below 1: ember is faster). PY defaults to Debian's
# /usr/bin/python3 (python3-torch, PyTorch's CPU build the issue compares against); on a GPU machine
# pass --device cuda --threads 1 --python python3 (that machine's PyTorch).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" device=cpu threads="1 2" reps=10 py=/usr/bin/python3 precision=fp32
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;  # bf16: both sides under autocast (ember::autocast, torch.autocast)
    -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "convnet.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
bench="$build/tools/ember-bench"
[ -x "$bench" ] || { echo "convnet.sh: $bench not found: build ember first" >&2; exit 2; }
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for t in $threads; do
  "$bench" cnn-step --device "$device" --threads "$t" --reps "$reps" --precision "$precision" | tee -a "$out"
  # Checked after ember's side, so that a machine without the device says so first.
  "$py" -c "import torch" 2>/dev/null || { echo "convnet.sh: $py has no torch (apt-get install python3-torch)" >&2; exit 2; }
  "$py" "$here/torch_convnet.py" --mode step --device "$device" --threads "$t" --reps "$reps" --precision "$precision" | tee -a "$out"
done
"$py" - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ms = {}
for r in rows:
    if "op" in r:
        ms[(r["framework"], r["threads"], r["op"])] = r["ms"]
ops = ["cnn_train_step", "conv1_forward", "conv1_backward", "conv2_forward", "conv2_backward"]
print(f"\n{'op':<16} {'threads':>7} {'ember ms':>10} {'torch ms':>10} {'ratio':>7}")
for t in sorted({k[1] for k in ms}):
    for op in ops:
        e, p = ms.get(("ember", t, op)), ms.get(("torch", t, op))
        if e is not None and p is not None:
            print(f"{op:<16} {t:>7} {e:>10.2f} {p:>10.2f} {e / p:>7.2f}")
PY
