#!/usr/bin/env bash
# GPU epochs side by side, in one run: ember-bench epoch against tools/bench/torch_gpu_epoch.py on the same
# GPU, and the ember/PyTorch time and peak-memory ratios (below 1: ember is faster / smaller).
#   tools/bench/gpu_epoch.sh [--build DIR] [--data DIR] [--epochs N] [--python PY]
# Rows: the MLP eager, the MLP with the whole step as a CUDA graph (PyTorch: capturable Adam and
# torch.cuda.graph), the CNN eager in fp32 and in tf32. The last line is the ratio summary (gpu-check.sh's row).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" data="$root/data/fashion-mnist" epochs=3 py=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_epoch.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
bench="$build/tools/ember-bench"
[ -x "$bench" ] || { echo "gpu_epoch.sh: $bench not found: build ember first" >&2; exit 2; }
status=0
cases=("mlp eager fp32" "mlp graph fp32" "cnn eager fp32" "cnn eager tf32")
lines=()
for c in "${cases[@]}"; do
  read -r model mode precision <<<"$c"
  flags=(--device cuda --data "$data" --epochs "$epochs" --model "$model" --precision "$precision")
  [ "$mode" = graph ] && flags+=(--cuda-graph)
  if ! e=$("$bench" epoch "${flags[@]}"); then echo "gpu_epoch.sh: ember-bench epoch ${flags[*]} failed" >&2; status=1; continue; fi
  echo "$e"
  if ! t=$("$py" "$here/torch_gpu_epoch.py" --data "$data" --epochs "$epochs" --model "$model" --mode "$mode" \
           --precision "$precision"); then
    echo "gpu_epoch.sh: torch_gpu_epoch.py failed for $c" >&2; status=1; continue
  fi
  echo "$t"
  lines+=("$c" "$e" "$t")
done
[ ${#lines[@]} -eq 0 ] && exit 1
python3 - "${lines[@]}" <<'PY'
import json, sys
a = sys.argv[1:]
summary = []
print(f"{'case':<16} {'ember ms':>9} {'torch ms':>9} {'time ratio':>10} {'ember MB':>9} {'torch MB':>9} {'mem ratio':>9}")
for case, e, t in zip(a[::3], a[1::3], a[2::3]):
    e, t = json.loads(e), json.loads(t)
    r, m = e["seconds"] / t["seconds"], e["peak_mb"] / t["peak_mb"]
    label = case.replace(" fp32", "").replace(" tf32", "-tf32") if case.startswith("mlp") else case.replace(" eager", "")
    print(f"{case:<16} {1e3 * e['seconds']:9.2f} {1e3 * t['seconds']:9.2f} {r:10.3f} {e['peak_mb']:9.1f} "
          f"{t['peak_mb']:9.1f} {m:9.3f}" + ("" if e["mode"] == (case.split()[1]) else f"  (ember ran {e['mode']})"))
    summary.append(f"{label} {r:.2f}")
print("ember/PyTorch epoch time: " + ", ".join(summary))
PY
exit $status
