#!/usr/bin/env bash
# max_pool2d and batch_norm side by side with Debian's PyTorch (python3-torch 1.13) in one run, at
# 1 and 2 threads; prints both JSON lines per op and the ratio ember / PyTorch (below 1: ember faster).
#   tools/bench/poolnorm.sh [BUILD_DIR] [REPS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-"$here/../../build"} reps=${2:-30}
bench="$build/tools/ember-bench-poolnorm"
[ -x "$bench" ] || { echo "poolnorm.sh: $bench not found: build the ember-bench-poolnorm target" >&2; exit 2; }
python=${PYTHON:-/usr/bin/python3}
for threads in 1 2; do
  ember=$("$bench" "$threads" "$reps")
  torch=$("$python" "$here/torch_poolnorm.py" "$threads" "$reps")
  echo "$ember"
  echo "$torch"
  "$python" - "$ember" "$torch" <<'PY'
import json, sys
e = {j["op"]: j for j in map(json.loads, sys.argv[1].splitlines())}
t = {j["op"]: j for j in map(json.loads, sys.argv[2].splitlines())}
for op in e:
    print(f"ratio {op:26s} threads={e[op]['threads']}  ember {e[op]['ms']:8.3f} ms  torch {t[op]['ms']:8.3f} ms"
          f"  ember/torch {e[op]['ms'] / t[op]['ms']:.2f}")
PY
done
