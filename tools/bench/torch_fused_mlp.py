"""PyTorch's side of tools/bench/fused_mlp.sh: the MNIST MLP's two layers (batch 64, 784-500-10) on the
CPU, linear(relu(linear(x))) forward and forward+backward (gradients of the four parameters), best and
median of REPS after 5 warm-up reps; JSON lines like ember-bench-fused-mlp's.
    python3 torch_fused_mlp.py [THREADS] [REPS]"""
import json
import sys
import time

import torch
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
torch.set_num_threads(threads)
torch.manual_seed(1)
x = torch.randn(64, 784)
w1 = (torch.randn(500, 784) * 0.03).requires_grad_()
b1 = (torch.randn(500) * 0.1).requires_grad_()
w2 = (torch.randn(10, 500) * 0.05).requires_grad_()
b2 = (torch.randn(10) * 0.1).requires_grad_()
g = torch.randn(64, 10)
params = (w1, b1, w2, b2)


def mlp():
    return F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)


def forward():
    with torch.no_grad():
        mlp()


def step():
    for p in params:
        p.grad = None
    mlp().backward(g)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


fwd, both = [], []
for r in range(-5, reps):
    a, b = timed(forward), timed(step)
    if r >= 0:
        fwd.append(a)
        both.append(b)
for op, ms in (("mlp_fwd", fwd), ("mlp_fwd_bwd", both)):
    s = sorted(ms)
    print(json.dumps({"framework": "torch " + torch.__version__, "op": op, "threads": threads,
                      "ms": round(s[0], 4), "median_ms": round(s[len(s) // 2], 4)}))
