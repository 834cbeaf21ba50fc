#!/bin/sh
# ctest data.mnist_checksums: the MNIST digits shipped in data/mnist decompress to the bytes whose
# SHA-256 sums were pinned when they were converted (../shared/data/mnist/README); the sums are
# written here, independently of data/mnist/SHA256SUMS, which must agree with them too.
# Usage: check_mnist_checksums.sh DIR
set -eu
dir=$1
expected='b16eea6ca1f58dd87a755560f105fb616b62031f2ff9c11632d0ad1fe55b7325  train-images-idx3-ubyte
a879a6a68c059e8234b45bfe14d56e6b8adb63f8376629a282a4a643a0570b83  train-labels-idx1-ubyte
67268022000009bf071fa782a8a9a72fd89ec22b7cc769e327062c67c4dc318f  t10k-images-idx3-ubyte
964f8d4e58ac45ab98815e481fed9deb1b7a57ffc918fb4f29fd70daa60f5453  t10k-labels-idx1-ubyte'
if [ "$(cat "$dir/SHA256SUMS")" != "$expected" ]; then
  echo "FAIL: $dir/SHA256SUMS differs from the pinned sums"
  exit 1
fi
echo "$expected" | while read -r sum name; do
  [ -s "$dir/$name.gz" ] || { echo "FAIL: $dir/$name.gz is missing or empty"; exit 1; }
  actual=$(gzip -dc "$dir/$name.gz" | sha256sum | cut -d' ' -f1)
  if [ "$actual" != "$sum" ]; then
    echo "FAIL: $name.gz decompresses to SHA-256 $actual, expected $sum"
    exit 1
  fi
  echo "ok $sum  $name"
done
echo "all 4 shipped MNIST files match their pinned SHA-256"
