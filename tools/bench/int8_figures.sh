#!/bin/bash
# The int8-vs-fp32 figures of the compression notes: ember-mnist --eval --int8 (minmax, percentile)
# and PyTorch's int8 (tools/bench/int8_torch.py) on the same checkpoints, 1 thread, one after the
# other. Checkpoints first:
#   build/tools/ember-mnist --model mlp --epochs 5 --threads 1 --device cpu -q --save /tmp/cmp/mlp.safetensors
#   build/tools/ember-mnist --model cnn --epochs 2 --threads 1 --device cpu -q --save /tmp/cmp/cnn.safetensors
cd "$(dirname "$0")/../.."
for m in mlp cnn; do
  for c in minmax percentile; do echo "== ember-mnist --model $m --device cpu --threads 1 --eval /tmp/cmp/$m.safetensors --int8 --int8-calibration $c"; build/tools/ember-mnist --model $m --device cpu --threads 1 --eval /tmp/cmp/$m.safetensors --int8 --int8-calibration $c 2>&1 | tail -4; done
  echo "== /usr/bin/python3 tools/bench/int8_torch.py --model $m --ckpt /tmp/cmp/$m.safetensors --threads 1"; /usr/bin/python3 tools/bench/int8_torch.py --model $m --ckpt /tmp/cmp/$m.safetensors --threads 1 2>&1 | tail -4
done
uptime
