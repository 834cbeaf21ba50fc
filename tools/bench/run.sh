#!/usr/bin/env bash
# Runs ember and PyTorch side by side on the same machine and prints the ratios.
#   tools/bench/run.sh [--build DIR] [--device cpu|cuda] [--data DIR] [--threads N] [--epochs N]
# Needs a PyTorch for `python3` (Debian: apt-get install python3-torch; PYTHON=... to choose).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" device=cpu data="$root/data/fashion-mnist" threads=1 epochs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}
if ! "$py" -c "import torch" 2>/dev/null; then
  for cand in /usr/bin/python3 python3; do
    if "$cand" -c "import torch" 2>/dev/null; then py=$cand; break; fi
  done
fi
bench="$build/tools/ember-bench"
[ -x "$bench" ] || { echo "run.sh: $bench not found: build ember first" >&2; exit 2; }
ember_json=$("$bench" mlp-epoch --device "$device" --data "$data" --threads "$threads" --epochs "$epochs")
echo "$ember_json"
if "$py" -c "import torch" 2>/dev/null; then
  torch_json=$(OMP_NUM_THREADS=$threads "$py" "$here/torch_mlp_epoch.py" --device "$device" --data "$data" \
               --threads "$threads" --epochs "$epochs")
  echo "$torch_json"
  "$py" - "$ember_json" "$torch_json" <<'PY'
import json, sys
e, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"mlp-epoch on {e['device']} ({e['threads']} thread(s)): ember {e['seconds']:.3f} s, "
      f"PyTorch {t['version']} {t['seconds']:.3f} s, ember/PyTorch time ratio {e['seconds'] / t['seconds']:.3f}")
PY
else
  echo "run.sh: no PyTorch found for $py: ember figures only"
fi
