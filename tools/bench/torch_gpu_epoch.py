#!/usr/bin/env python3
"""PyTorch side of the GPU epoch benchmarks, beside `ember-bench epoch` (tools/bench/gpu_epoch.sh runs both):
  --model mlp --mode eager   one epoch of the MNIST MLP (784-500-10, ReLU, Adam lr 1e-3, batch 64)
  --model mlp --mode graph   the same with the whole step (forward, backward, Adam with capturable=True)
                             captured once in a CUDA graph (torch.cuda.graph) and replayed per batch
  --model cnn --mode eager   one epoch of the classic MNIST CNN (examples/mnist Net, with dropout)
  --precision fp32|tf32      TF32 off or on for matmuls and cuDNN convolutions
The data is preloaded on the device as uint8 images and each shuffled batch is gathered and normalised there
(what ember's DataLoader does on a GPU); full batches only (ember-bench drops the last partial one too).
Timed: the best of --epochs epochs, host clock bracketed by torch.cuda.synchronize(). Prints one JSON line
with the seconds, images/s and peak device memory (torch.cuda.max_memory_allocated, from process start).
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_convnet import mnist_cnn  # noqa: E402
from torch_mlp_epoch import find, read_idx  # noqa: E402

MEAN, STD = 0.1307, 0.3081


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--device", default="cuda", help="cuda (or cpu, eager only: to check the script anywhere)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (--device cpu)")
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--mode", choices=["eager", "graph"], default="eager")
    ap.add_argument("--precision", choices=["fp32", "tf32"], default="fp32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("torch_gpu_epoch.py: no CUDA device available (torch.cuda.is_available() is False)")
    if args.mode == "graph" and not cuda:
        raise SystemExit("torch_gpu_epoch.py: --mode graph needs --device cuda")
    if args.mode == "graph" and args.model != "mlp":
        raise SystemExit("torch_gpu_epoch.py: --mode graph is for --model mlp (the CNN's dropout is eager in ember)")
    torch.set_num_threads(args.threads)
    tf32 = args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    images = read_idx(find(args.data, "train-images-idx3-ubyte")).to(dev)
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte")).long().to(dev)
    n, rows, cols = images.shape
    if args.model == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(rows * cols, args.hidden), torch.nn.ReLU(),
                                    torch.nn.Linear(args.hidden, 10)).to(dev)
        shape = (-1, rows * cols)
    else:
        model = mnist_cnn(rows, cols).to(dev)
        shape = (-1, 1, rows, cols)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=args.mode == "graph")
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = args.batch_size
    steps = n // bs

    def batch(perm, i):
        idx = perm[i * bs:(i + 1) * bs]
        return ((images[idx].float() / 255.0 - MEAN) / STD).reshape(shape), labels[idx]

    def eager_step(x, y):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    run_step = eager_step
    if args.mode == "graph":
        # As PyTorch's CUDA-graph notes: warm up on a side stream, capture, then copy each batch into the
        # static inputs and replay.
        perm = torch.randperm(n, device=dev)
        static_x, static_y = batch(perm, 0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                eager_step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = loss_fn(model(static_x), static_y)
            static_loss.backward()
            opt.step()

        def run_step(x, y):
            static_x.copy_(x)
            static_y.copy_(y)
            graph.replay()
            return static_loss

    best, loss = None, None
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(args.epochs):
        sync()
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=dev)
        for i in range(steps):
            loss = run_step(*batch(perm, i))
        sync()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print(json.dumps({"framework": "torch", "version": torch.__version__, "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
                      "model": args.model, "mode": args.mode, "precision": args.precision, "batch": bs,
                      "seconds": round(best, 5), "images_per_s": round(steps * bs / best, 1),
                      "peak_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if cuda else 0.0,
                      "final_loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
