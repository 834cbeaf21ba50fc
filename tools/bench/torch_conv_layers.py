#!/usr/bin/env python3
"""PyTorch's side of tools/bench/conv_layers.sh: the classic MNIST CNN's two conv layers at batch B
(conv 1->32 3x3 on 1x28x28, conv 32->64 3x3 on 32x26x26), each direction timed alone as ember's
primitives are: forward (F.conv2d with bias), the data gradient, the weight gradient, and the weight
and bias gradients together (aten::convolution_backward, the op autograd runs, with the output_mask
entries of each case); and both layers with their ReLUs forward and backward through autograd.
Prints one JSON line per layer and direction: best of --reps after a warm-up.
    python3 tools/bench/torch_conv_layers.py --threads 1 [--reps 20] [--batch-size 64]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--reps", type=int, default=20)
ap.add_argument("--batch-size", type=int, default=64)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)


def best(fn, reps):
    fn()
    t = 1e300
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


n = args.batch_size
with torch.no_grad():
    for name, cin, cout, hw in (("conv1_1x28x28_to_32", 1, 32, 28), ("conv2_32x26x26_to_64", 32, 64, 26)):
        ho = hw - 2
        x = torch.randn(n, cin, hw, hw)
        w = torch.randn(cout, cin, 3, 3) * 0.1
        b = torch.randn(cout)
        dy = torch.randn(n, cout, ho, ho)
        flops = 2.0 * n * cout * ho * ho * cin * 9

        def bwd(mask):
            return lambda: torch.ops.aten.convolution_backward(dy, x, w, [cout], [1, 1], [0, 0], [1, 1], False,
                                                               [0, 0], 1, mask)

        for direction, fn, fl in (("forward", lambda: F.conv2d(x, w, b), flops),
                                  ("data_grad", bwd([True, False, False]), flops),
                                  ("weight_grad", bwd([False, True, False]), flops),
                                  ("weight_bias_grad", bwd([False, True, True]), flops)):
            s = best(fn, args.reps)
            print(json.dumps({"framework": "torch", "version": torch.__version__, "threads": args.threads,
                              "layer": name, "direction": direction, "ms": round(s * 1e3, 4),
                              "gflops": round(fl / s / 1e9, 2),
                              "mkldnn": torch.backends.mkldnn.is_available()}))

# Both layers through autograd, as a training step runs them: conv, ReLU, conv, ReLU, forward and
# backward (no input gradient for the images).
x = torch.randn(n, 1, 28, 28)
w1 = (torch.randn(32, 1, 3, 3) * 0.3).requires_grad_()
b1 = torch.zeros(32, requires_grad=True)
w2 = (torch.randn(64, 32, 3, 3) * 0.05).requires_grad_()
b2 = torch.zeros(64, requires_grad=True)


g = torch.randn(n, 64, 24, 24)


def step():
    for t in (w1, b1, w2, b2):
        t.grad = None
    F.relu(F.conv2d(F.relu(F.conv2d(x, w1, b1)), w2, b2)).backward(g)


s = best(step, args.reps)
print(json.dumps({"framework": "torch", "version": torch.__version__, "threads": args.threads, "layer": "conv1+conv2",
                  "direction": "fwd_bwd_autograd", "ms": round(s * 1e3, 4), "gflops": 0,
                  "mkldnn": torch.backends.mkldnn.is_available()}))
