#!/usr/bin/env python3
"""One training step (Adam lr 1e-3, batch 64, 1x28x28 inputs) of the classic MNIST CNN and of several
small-ResNet designs in PyTorch, median of N steps after 3 warm-up steps, one thread by default: what a
design costs before its 10-epoch run (issue 12's design study; the designs are the ones
`ember-mnist --model resnet --resnet-widths W --resnet-blocks B` builds, via torch_convnet.SmallResNet).
  /usr/bin/python3 tools/bench/torch_resnet_designs.py [--threads 1] [--steps 8] [--design 32,64,128:1,1,1 ...]
Prints one JSON line per model: parameters and the median step in ms."""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_convnet import SmallResNet, mnist_cnn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--design", action="append", help="WIDTHS:BLOCKS, e.g. 32,64,128:1,1,1 (repeatable)")
    args = ap.parse_args()
    designs = args.design or ["16,32,64:2,2,2", "32,64,128:1,1,1", "32,64,128:2,2,2", "32,64,128:1,2,2"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    models = [("cnn", mnist_cnn())]
    for d in designs:
        w, b = (tuple(int(v) for v in part.split(",")) for part in d.split(":"))
        if len(w) != len(b):
            ap.error(f"--design {d}: {len(w)} widths and {len(b)} block counts; give one count per width")
        models.append((f"resnet {d}", SmallResNet(10, w, b)))
    for name, model in models:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        print(json.dumps({"model": name, "parameters": sum(p.numel() for p in model.parameters()),
                          "threads": args.threads, "median_step_ms": round(1e3 * times[len(times) // 2], 1),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
