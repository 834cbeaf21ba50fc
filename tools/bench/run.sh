#!/usr/bin/env bash
# Runs ember and PyTorch side by side on the same machine, in one run, and prints the time ratios.
#   tools/bench/run.sh [--build DIR] [--device cpu|cuda] [--data DIR] [--threads N] [--epochs N]
#                      [--peer pypi|debian|both] [--precision fp32|bf16]
# The PyTorch peers:
#   pypi    current torch from PyPI in the virtual environment tools/bench/setup-peer.sh makes
#           (.venv-torch/, or EMBER_PEER_VENV)
#   debian  Debian's python3-torch (1.13) for /usr/bin/python3 (apt-get install python3-torch)
#   both    (default) each of the two that is installed, PyPI's first
# A python3 on PATH whose torch is neither of those (a GPU machine's own) runs too, labelled "path".
# PYTHON=/path/to/python overrides the list with that one interpreter's torch.
# Prints ember's JSON line, each peer's JSON line (version, BLAS, oneDNN, CPU kernels' ISA), then a
# table of ratios (ember time / PyTorch time: below 1 means ember is faster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" device=cpu data="$root/data/fashion-mnist" threads=1 epochs=1 peer=both precision=fp32
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --peer) peer=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;  # bf16: ember's autocast and torch.autocast, side by side
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$peer" in pypi | debian | both) ;; *) echo "run.sh: --peer $peer: expected pypi, debian or both" >&2; exit 2 ;; esac

bench="$build/tools/ember-bench"
[ -x "$bench" ] || { echo "run.sh: $bench not found: build ember first" >&2; exit 2; }

# The peers to run, as "label python" pairs: the PyPI environment, Debian's python3-torch, and any
# other python3 on PATH whose torch is neither (a GPU machine's own PyTorch, for one).
peers=()
has_torch() { { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1; } && "$1" -c "import torch" 2>/dev/null; }
torch_dir() { "$1" -c "import os, torch; print(os.path.dirname(torch.__file__))" 2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then
  has_torch "$PYTHON" || { echo "run.sh: PYTHON=$PYTHON has no torch" >&2; exit 2; }
  peers+=("custom $PYTHON")
else
  venv_py=${EMBER_PEER_VENV:-$root/.venv-torch}/bin/python
  seen=""
  if [ "$peer" != debian ]; then
    if has_torch "$venv_py"; then peers+=("pypi $venv_py"); seen=$(torch_dir "$venv_py")
    else echo "run.sh: no PyPI torch in ${venv_py%/bin/python} (make it with tools/bench/setup-peer.sh)" >&2; fi
  fi
  if [ "$peer" != pypi ]; then
    if has_torch /usr/bin/python3 && [ "$(torch_dir /usr/bin/python3)" = /usr/lib/python3/dist-packages/torch ]; then
      peers+=("debian /usr/bin/python3"); seen="$seen $(torch_dir /usr/bin/python3)"
    else echo "run.sh: no Debian python3-torch for /usr/bin/python3 (apt-get install python3-torch)" >&2; fi
  fi
  path_py=$(command -v python3 || true)
  if [ -n "$path_py" ] && has_torch "$path_py"; then
    d=$(torch_dir "$path_py")
    case " $seen " in *" $d "*) ;; *) peers+=("path $path_py") ;; esac
  fi
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "cpu: ${cpu:-unknown} ($(nproc) cores visible), threads $threads, device $device"
[ -n "${OPENBLAS_CORETYPE:-}" ] && echo "note: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE is set in this environment"

ember_json=$("$bench" mlp-epoch --device "$device" --data "$data" --threads "$threads" --epochs "$epochs" \
             --precision "$precision")
echo "$ember_json"
results=()
for p in "${peers[@]}"; do
  label=${p%% *} py=${p#* }
  json=$(OMP_NUM_THREADS=$threads "$py" "$here/torch_mlp_epoch.py" --device "$device" --data "$data" \
         --threads "$threads" --epochs "$epochs" --precision "$precision")
  echo "$json"
  results+=("$label" "$json")
done
if [ ${#peers[@]} -eq 0 ]; then
  echo "run.sh: no PyTorch found: ember figures only"
  exit 0
fi
python3 - "$ember_json" "${results[@]}" <<'PY'
import json, sys
e = json.loads(sys.argv[1])
rest = sys.argv[2:]
print(f"mlp-epoch on {e['device']} ({e['threads']} thread(s), {e.get('precision', 'fp32')}): ember {e['seconds']:.3f} s")
for label, raw in zip(rest[::2], rest[1::2]):
    t = json.loads(raw)
    print(f"  vs PyTorch {t['version']:<16} ({label}; BLAS {t.get('blas', '?')}, oneDNN {t.get('onednn', '?')}, "
          f"ISA {t.get('cpu_capability', '?')}): {t['seconds']:.3f} s, ember/PyTorch time ratio "
          f"{e['seconds'] / t['seconds']:.3f}")
    if 'cpu_seconds' in e and 'cpu_seconds' in t:  # process CPU time (a shared machine's wait not counted)
        print(f"    CPU time: ember {e['cpu_seconds']:.3f} s, PyTorch {t['cpu_seconds']:.3f} s, "
              f"ratio {e['cpu_seconds'] / t['cpu_seconds']:.3f}")
if 'floor_s' in e:
    print(f"  fp32 floor {e['floor_s']:.3f} s ({e['gflop']:.1f} GFLOP at {e['peak_gflops']:.1f} GFLOP/s): "
          f"ember at {e['x_floor']:.2f} x floor (CPU time {e['cpu_x_floor']:.2f} x)")
PY
