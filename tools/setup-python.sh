#!/usr/bin/env bash
# Makes .venv/ (git-ignored) with the official Python clients that ember's interoperability tests run
# against ember's files: the `safetensors` library (with numpy, which its numpy API reads into).
# Small (about 20 MB, under a minute from PyPI). Quiet when the environment already works.
#
# Usage: tools/setup-python.sh [--strict]
#   --strict  exit 1 when PyPI cannot be reached. Without it that is a warning and the exit status
#             is 0 (tools/setup.sh still works offline); the interop tests then skip and say why.
# Environment: EMBER_PYTHON_VENV (default: <repo>/.venv). The tests find it through the CMake cache
# variable EMBER_PYTHON (default <repo>/.venv/bin/python) or the environment variable EMBER_PYTHON.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EMBER_PYTHON_VENV:-$root/.venv}
strict=0
for arg in "$@"; do
  case "$arg" in
    --strict) strict=1 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-python: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
packages=(safetensors numpy)
modules="import safetensors, safetensors.numpy, numpy"

py=$venv/bin/python
[[ -x $py ]] && "$py" -c "$modules" >/dev/null 2>&1 && exit 0

fail() {
  echo "setup-python: $*" >&2
  echo "setup-python: the interoperability tests against the official Python clients will skip" >&2
  [[ $strict -eq 1 ]] && exit 1
  exit 0
}
if [[ ! -x $py ]]; then
  python3 -m venv "$venv" >/dev/null 2>&1 || fail "'python3 -m venv $venv' failed (on Debian: apt-get install python3-venv)"
fi
timeout "${EMBER_FETCH_TIMEOUT:-300}" "$py" -m pip install --quiet --disable-pip-version-check --timeout 30 \
  "${packages[@]}" || fail "pip could not install ${packages[*]} from PyPI into $venv (offline?)"
"$py" -c "$modules" || fail "$venv has ${packages[*]} installed but they do not import"
echo "setup-python: $venv: $("$py" -c 'import safetensors, numpy; print(f"safetensors {safetensors.__version__}, numpy {numpy.__version__}")')"
