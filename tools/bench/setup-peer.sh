#!/usr/bin/env bash
# Makes the PyTorch that ember's benchmarks compare against: current `torch` from PyPI in a virtual
# environment of its own (default .venv-torch/ at the repository root, git-ignored).
#
# Usage: tools/bench/setup-peer.sh [--venv DIR] [--torch-version VERSION]
#   --venv DIR             where to make the environment (default: <repo>/.venv-torch; env EMBER_PEER_VENV)
#   --torch-version V      a pinned version (default: the newest PyPI serves)
#
# Size: PyPI's Linux x86_64 `torch` wheel depends on NVIDIA's CUDA libraries (the nvidia-* wheels:
# cuBLAS, cuDNN, NCCL, ...), so this downloads several GB (about 3-5 GB installed) even for CPU-only
# use. It is therefore not part of tools/setup.sh or CI; run it once by hand on a machine where the
# benchmark matters. tools/bench/run.sh uses this environment when it exists, and Debian's
# python3-torch (1.13, `apt-get install python3-torch`) as the second reference.
# Safe to run again: an environment whose torch imports is left as it is (say --torch-version to
# change it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${EMBER_PEER_VENV:-$root/.venv-torch}
version=
while (($#)); do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --torch-version) version=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-peer: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

py=$venv/bin/python
if [[ -z $version ]] && [[ -x $py ]] && "$py" -c "import torch" 2>/dev/null; then
  echo "setup-peer: $venv already has torch $("$py" -c 'import torch; print(torch.__version__)')"
  exit 0
fi

if [[ ! -x $py ]]; then
  python3 -m venv "$venv" || {
    echo "setup-peer: 'python3 -m venv' failed: on Debian, apt-get install python3-venv" >&2
    exit 1
  }
fi
spec=torch${version:+==$version}
echo "setup-peer: installing $spec from PyPI into $venv (several GB: the wheel brings NVIDIA's CUDA libraries)"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$py" -m pip install --quiet --disable-pip-version-check "$spec" numpy
"$py" - <<'PY'
import torch
print(f"setup-peer: torch {torch.__version__} ready "
      f"(CPU capability {torch.backends.cpu.get_cpu_capability()}, oneDNN {torch.backends.mkldnn.is_available()})")
PY
