#!/usr/bin/env bash
# The MNIST MLP's and CNN's ops one by one beside PyTorch, in one run, and the MLP epoch's profiler
# overhead:
#   tools/bench/op_cases.sh [--build DIR] [--device cpu|cuda] [--threads N] [--runs N] [--warmup N]
#                           [--python PY] [--data DIR] [--overhead-rounds N]
# Runs ember-bench op-cases and tools/bench/torch_op_cases.py with the same cases and flags, then
# prints ember / PyTorch for each case (median of --runs after --warmup; below 1: ember is faster) and
# both programs' peak memory (peak RSS; ember's allocator peak; on CUDA each one's device peak). With
# --overhead-rounds N > 0 it then runs ember-bench profiler-overhead (N epoch pairs). PY defaults to
# Debian's /usr/bin/python3 (python3-torch).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" device=cpu threads=1 runs=51 warmup=10 py=/usr/bin/python3 data="$root/data/fashion-mnist" rounds=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --overhead-rounds) rounds=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "op_cases.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
bench="$build/tools/ember-bench"
[ -x "$bench" ] || { echo "op_cases.sh: $bench not found: build ember first" >&2; exit 2; }
"$py" -c "import torch" 2>/dev/null || { echo "op_cases.sh: $py has no torch (apt-get install python3-torch)" >&2; exit 2; }
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bench" op-cases --device "$device" --threads "$threads" --runs "$runs" --warmup "$warmup" --json "$tmp/ember.json"
"$py" "$here/torch_op_cases.py" --device "$device" --threads "$threads" --runs "$runs" --warmup "$warmup" \
  --json "$tmp/torch.json"
"$py" - "$tmp/ember.json" "$tmp/torch.json" <<'PY'
import json, sys
rows, mins = {}, {}
peak = {}
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        if "case" in r:
            rows.setdefault(r["case"], {})[r["framework"]] = r["median_ms"]
            mins.setdefault(r["case"], {})[r["framework"]] = r["min_ms"]
        else:
            peak[r["framework"]] = r
# The ratio of the medians, and of the fastest runs (steadier on a machine other jobs load).
print(f"\n{'case':<36} {'ember ms':>10} {'torch ms':>10} {'ember/torch':>12} {'min ratio':>10}")
for case, v in rows.items():
    if "ember" in v and "torch" in v:
        m = mins[case]
        print(f"{case:<36} {v['ember']:>10.4f} {v['torch']:>10.4f} {v['ember'] / v['torch']:>12.2f} "
              f"{m['ember'] / m['torch']:>10.2f}")
    else:
        print(f"{case:<36} (only in {', '.join(v)})")
e, t = peak.get("ember", {}), peak.get("torch", {})
print(f"\npeak memory  ember: {e.get('peak_rss_mib', 0):.1f} MiB RSS ({e.get('peak_allocator_mib', 0):.1f} MiB in its "
      f"CPU allocator), torch: {t.get('peak_rss_mib', 0):.1f} MiB RSS; ember/torch RSS "
      f"{e.get('peak_rss_mib', 0) / max(t.get('peak_rss_mib', 1), 1e-9):.2f}")
if e.get("peak_device_mib") or t.get("peak_device_mib"):
    print(f"peak device memory  ember: {e.get('peak_device_mib', 0):.1f} MiB, torch: {t.get('peak_device_mib', 0):.1f} MiB")
PY
if [ "$rounds" -gt 0 ]; then
  "$bench" profiler-overhead --device "$device" --threads "$threads" --data "$data" --rounds "$rounds"
fi
