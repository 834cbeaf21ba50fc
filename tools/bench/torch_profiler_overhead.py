#!/usr/bin/env python3
"""PyTorch side of `ember-bench profiler-overhead`: the MNIST MLP epoch (784-500-10, Adam lr 1e-3,
batch 64, shuffled, data preloaded as tensors, as torch_mlp_epoch.py) alternately without and with
torch.profiler recording it (CPU activity, record_shapes off, as ember's profiler records names and
bytes only; profile_memory on, as ember counts allocations), --rounds pairs after one warm-up epoch.
Prints one JSON line with the median wall and CPU seconds of each and their ratios.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mlp_epoch import find, read_idx  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    images = read_idx(find(args.data, "train-images-idx3-ubyte"))
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte")).long()
    x_all = ((images.float() / 255.0 - 0.1307) / 0.3081).reshape(len(images), -1)
    model = torch.nn.Sequential(torch.nn.Linear(784, 500), torch.nn.ReLU(), torch.nn.Linear(500, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    n, bs = len(x_all), 64

    def epoch():
        t0, c0 = time.perf_counter(), time.thread_time()
        perm = torch.randperm(n)
        for i in range(0, n - bs + 1, bs):
            with torch.profiler.record_function("train.step"):
                idx = perm[i:i + bs]
                loss = loss_fn(model(x_all[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return time.perf_counter() - t0, time.thread_time() - c0

    epoch()
    off, on = [], []
    for _ in range(args.rounds):
        off.append(epoch())
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            on.append(epoch())
        prof.key_averages()  # the table, outside the timed epoch (as ember builds its report in stop())
    med = lambda v, k: statistics.median(x[k] for x in v)  # noqa: E731
    print('{"framework": "torch", "version": "%s", "case": "mlp_epoch_profiler", "threads": %d, "rounds": %d, '
          '"off_s": %.4f, "on_s": %.4f, "on_over_off": %.4f, "off_cpu_s": %.4f, "on_cpu_s": %.4f, '
          '"on_over_off_cpu": %.4f}' % (torch.__version__, args.threads, args.rounds, med(off, 0), med(on, 0),
                                        med(on, 0) / med(off, 0), med(off, 1), med(on, 1), med(on, 1) / med(off, 1)))


if __name__ == "__main__":
    main()
