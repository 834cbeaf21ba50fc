#!/usr/bin/env bash
# The MNIST MLP's two layers on the CPU (batch 64, 784-500-10): ember's fused_linear_relu_linear against
# its composite linear(fused_linear_relu(...)) and against PyTorch's linear(relu(linear(...))), in one
# run; prints the JSON lines and the ratios (fused / composite, ember / torch; below 1: faster).
#   tools/bench/fused_mlp.sh [BUILD_DIR] [REPS] [THREADS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-"$here/../../build"} reps=${2:-200} threads=${3:-1}
bench="$build/tools/ember-bench-fused-mlp"
[ -x "$bench" ] || { echo "fused_mlp.sh: $bench not found: build the ember-bench-fused-mlp target" >&2; exit 2; }
python=${PYTHON:-/usr/bin/python3}
ember=$("$bench" "$threads" "$reps")
torch=$("$python" "$here/torch_fused_mlp.py" "$threads" "$reps")
echo "$ember"
echo "$torch"
"$python" - "$ember" "$torch" <<'PY'
import json, sys
e = {j["op"]: j for j in map(json.loads, sys.argv[1].splitlines())}
t = {j["op"]: j for j in map(json.loads, sys.argv[2].splitlines())}
for op in ("mlp_fwd", "mlp_fwd_bwd"):
    f, c, p = e[op + "_fused"], e[op + "_composite"], t[op]
    for key in ("ms", "median_ms"):
        print(f"{op:12s} {key:9s} fused {f[key]:7.3f}  composite {c[key]:7.3f}  torch {p[key]:7.3f}"
              f"  fused/composite {f[key] / c[key]:.3f}  fused/torch {f[key] / p[key]:.3f}")
PY
