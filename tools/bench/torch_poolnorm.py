#!/usr/bin/env python3
"""PyTorch's side of tools/bench/bench_poolnorm.cpp: the same ops, shapes and timing rule (best of
reps after a warm-up), as JSON lines.  Usage: torch_poolnorm.py THREADS [REPS]"""
import json
import sys
import time

import torch
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
torch.set_num_threads(threads)
torch.manual_seed(1)


def best_ms(fn):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def report(op, ms):
    print(json.dumps({"framework": "torch", "version": torch.__version__, "op": op, "threads": threads,
                      "ms": round(ms, 4)}))


x = torch.randn(64, 64, 24, 24, requires_grad=True)
g = torch.randn(64, 64, 12, 12)


def pool_fwd():
    with torch.no_grad():
        F.max_pool2d(x, 2)


def pool_fwd_bwd():
    x.grad = None
    F.max_pool2d(x, 2).backward(g)


report("max_pool2d_fwd", best_ms(pool_fwd))
report("max_pool2d_fwd_bwd", best_ms(pool_fwd_bwd))

xb = torch.randn(64, 32, 26, 26, requires_grad=True)
w = torch.ones(32, requires_grad=True)
b = torch.zeros(32, requires_grad=True)
rm, rv = torch.zeros(32), torch.ones(32)
gb = torch.randn(64, 32, 26, 26)


def bn_fwd():
    with torch.no_grad():
        F.batch_norm(xb, rm, rv, w, b, training=True)


def bn_fwd_bwd():
    xb.grad = w.grad = b.grad = None
    F.batch_norm(xb, rm, rv, w, b, training=True).backward(gb)


report("batch_norm_train_fwd", best_ms(bn_fwd))
report("batch_norm_train_fwd_bwd", best_ms(bn_fwd_bwd))
