#!/usr/bin/env bash
# ember::profiler's cost on the MNIST MLP epoch (784-500-10, Adam, batch 64), in one run:
#   tools/bench/profiler_overhead.sh [--build DIR] [--baseline-lib DIR] [--data DIR] [--rounds N] [--threads N]
# 1. profiler off: with --baseline-lib (a folder holding the libember.so.0 of the commit before the
#    profiler), `ember-bench mlp-epoch` alternately with that library and with this build's, N
#    rounds, median epoch seconds of each and their ratio (the cost of the hooks left in every op).
# 2. profiler on: `ember-bench profiler-overhead` (N pairs of epochs, without and with a session),
#    the medians and their ratio (wall and CPU time), and the cost of one range while no session
#    runs; then tools/bench/torch_profiler_overhead.py, the same for PyTorch and torch.profiler.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build" baseline="" data="$root/data/fashion-mnist" rounds=5 threads=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --baseline-lib) baseline=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profiler_overhead.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
bench="$build/tools/ember-bench"
[ -x "$bench" ] || { echo "profiler_overhead.sh: $bench not found: build ember first" >&2; exit 2; }
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
py=/usr/bin/python3
if [ -n "$baseline" ]; then
  [ -e "$baseline/libember.so.0" ] || { echo "profiler_overhead.sh: no libember.so.0 in $baseline" >&2; exit 2; }
  "$py" - "$bench" "$baseline" "$data" "$threads" "$rounds" <<'PY'
import json, os, resource, statistics, subprocess, sys
bench, baseline, data, threads, rounds = sys.argv[1:]
def cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime
t = {"base": [], "this": []}
c = {"base": [], "this": []}
for r in range(int(rounds)):
    for tag in ("base", "this"):
        env = dict(os.environ)
        if tag == "base":
            env["LD_LIBRARY_PATH"] = baseline
        c0 = cpu()
        out = subprocess.run([bench, "mlp-epoch", "--data", data, "--threads", threads], env=env, check=True,
                             capture_output=True, text=True).stdout
        c[tag].append(cpu() - c0)
        t[tag].append(json.loads(out.strip().splitlines()[-1])["seconds"])
        print(tag, f"epoch {t[tag][-1]:.4f} s, process CPU {c[tag][-1]:.3f} s", flush=True)
b, n = statistics.median(t["base"]), statistics.median(t["this"])
bc, nc = statistics.median(c["base"]), statistics.median(c["this"])
print(f"profiler off: median epoch {n:.4f} s vs {b:.4f} s before the profiler: ratio {n / b:.4f}; "
      f"process CPU time (data loading included) {nc:.3f} s vs {bc:.3f} s: ratio {nc / bc:.4f}")
PY
  echo "range cost with the library before the profiler:"
  LD_LIBRARY_PATH=$baseline "$bench" profiler-overhead --data "$data" --threads "$threads" --rounds 0
fi
echo "this build (range cost, then MLP epochs without and with ember::profiler):"
"$bench" profiler-overhead --data "$data" --threads "$threads" --rounds "$rounds" | grep '^{'
echo "PyTorch $("$py" -c 'import torch; print(torch.__version__)') (the same epochs without and with torch.profiler):"
"$py" "$here/torch_profiler_overhead.py" --data "$data" --threads "$threads" --rounds "$rounds"
