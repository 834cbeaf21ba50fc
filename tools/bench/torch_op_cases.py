#!/usr/bin/env python3
"""PyTorch side of `ember-bench op-cases`: the same cases (the MNIST MLP's and CNN's linear layers,
elementwise maps, softmax-cross-entropy, optimizer updates, convolutions, pooling) at the same
shapes, each the median of --runs timed calls after --warmup. tools/bench/op_cases.sh runs both and
prints the ratios. Writes JSON lines (--json) and prints a table.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F


def time_case(fn, warmup, runs, dev):
    for _ in range(warmup):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    median = ms[runs // 2] if runs % 2 else 0.5 * (ms[runs // 2 - 1] + ms[runs // 2])
    return median, ms[0]


def mnist_cnn():
    # models::mnist_cnn: PyTorch's examples/mnist network
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Dropout(0.25), torch.nn.Flatten(), torch.nn.Linear(9216, 128),
        torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(128, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=51)
    ap.add_argument("--json", default="")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    dev = torch.device(args.device)
    results = []

    def run(name, fn):
        if args.only and args.only not in name:
            return
        results.append((name, *time_case(fn, args.warmup, args.runs, dev)))

    B = 64
    for name, n_in, n_out, input_grad in [("mlp_fc1_784x500", 784, 500, False), ("mlp_fc2_500x10", 500, 10, True),
                                          ("cnn_fc1_9216x128", 9216, 128, True), ("cnn_fc2_128x10", 128, 10, True)]:
        x = torch.randn(B, n_in, device=dev, requires_grad=input_grad)
        w = (torch.randn(n_out, n_in, device=dev) * 0.05).requires_grad_()
        b = torch.zeros(n_out, device=dev, requires_grad=True)
        g = torch.randn(B, n_out, device=dev)

        def fwd(x=x, w=w, b=b):
            with torch.no_grad():
                F.linear(x, w, b)

        def fwd_bwd(x=x, w=w, b=b, g=g):
            x.grad = w.grad = b.grad = None
            F.linear(x, w, b).backward(g)
        run(name + "_fwd", fwd)
        run(name + "_fwd_bwd", fwd_bwd)
    x = torch.randn(B, 784, device=dev)
    w = (torch.randn(500, 784, device=dev) * 0.05).requires_grad_()
    b = torch.zeros(500, device=dev, requires_grad=True)
    g = torch.randn(B, 500, device=dev)

    def linear_relu():
        w.grad = b.grad = None
        F.relu(F.linear(x, w, b)).backward(g)
    run("mlp_linear_relu_784x500_fwd_bwd", linear_relu)

    for name, shape in [("64x500", (B, 500)), ("64x32x26x26", (B, 32, 26, 26))]:
        a, c = torch.randn(*shape, device=dev), torch.randn(*shape, device=dev)
        ag = torch.randn(*shape, device=dev, requires_grad=True)
        gg = torch.randn(*shape, device=dev)

        def relu_fwd(a=a):
            with torch.no_grad():
                torch.relu(a)

        def relu_fwd_bwd(ag=ag, gg=gg):
            ag.grad = None
            torch.relu(ag).backward(gg)

        def add(a=a, c=c):
            with torch.no_grad():
                torch.add(a, c)

        def mul(a=a, c=c):
            with torch.no_grad():
                torch.mul(a, c)
        run(f"relu_{name}_fwd", relu_fwd)
        run(f"relu_{name}_fwd_bwd", relu_fwd_bwd)
        run(f"add_{name}", add)
        run(f"mul_{name}", mul)

    for rows, cols in [(B, 10), (4096, 1000)]:
        logits = torch.randn(rows, cols, device=dev, requires_grad=True)
        labels = torch.randint(0, cols, (rows,), device=dev)

        def ce_fwd(logits=logits, labels=labels):
            with torch.no_grad():
                F.cross_entropy(logits, labels)

        def ce_fwd_bwd(logits=logits, labels=labels):
            logits.grad = None
            F.cross_entropy(logits, labels).backward()
        run(f"cross_entropy_{rows}x{cols}_fwd", ce_fwd)
        run(f"cross_entropy_{rows}x{cols}_fwd_bwd", ce_fwd_bwd)

    mlp = torch.nn.Sequential(torch.nn.Linear(784, 500), torch.nn.ReLU(), torch.nn.Linear(500, 10)).to(dev)
    cnn = mnist_cnn().to(dev)
    y = torch.randint(0, 10, (B,), device=dev)
    F.cross_entropy(mlp(torch.randn(B, 784, device=dev)), y).backward()
    F.cross_entropy(cnn(torch.randn(B, 1, 28, 28, device=dev)), y).backward()
    # foreach=False: one pass per parameter, as ember's CPU update (PyTorch's CPU default too)
    adam_mlp = torch.optim.Adam(mlp.parameters(), lr=1e-3, foreach=False)
    sgd_mlp = torch.optim.SGD(mlp.parameters(), lr=1e-3, momentum=0.9, foreach=False)
    adam_cnn = torch.optim.Adam(cnn.parameters(), lr=1e-3, foreach=False)
    n_mlp = sum(p.numel() for p in mlp.parameters())
    n_cnn = sum(p.numel() for p in cnn.parameters())
    run(f"adam_step_mlp_{n_mlp}", adam_mlp.step)
    run(f"sgd_momentum_step_mlp_{n_mlp}", sgd_mlp.step)
    run(f"adam_step_cnn_{n_cnn}", adam_cnn.step)

    for name, c_in, c_out, hw, input_grad in [("conv1_1x28x28_to_32", 1, 32, 28, False),
                                              ("conv2_32x26x26_to_64", 32, 64, 26, True)]:
        x = torch.randn(B, c_in, hw, hw, device=dev, requires_grad=input_grad)
        w = (torch.randn(c_out, c_in, 3, 3, device=dev) * 0.1).requires_grad_()
        b = torch.zeros(c_out, device=dev, requires_grad=True)
        g = torch.randn(B, c_out, hw - 2, hw - 2, device=dev)

        def conv_fwd(x=x, w=w, b=b):
            with torch.no_grad():
                F.conv2d(x, w, b)

        def conv_fwd_bwd(x=x, w=w, b=b, g=g):
            x.grad = w.grad = b.grad = None
            F.conv2d(x, w, b).backward(g)
        run(name + "_fwd", conv_fwd)
        run(name + "_fwd_bwd", conv_fwd_bwd)
    xp = torch.randn(B, 64, 24, 24, device=dev, requires_grad=True)
    gp = torch.randn(B, 64, 12, 12, device=dev)

    def pool():
        xp.grad = None
        F.max_pool2d(xp, 2).backward(gp)
    run("max_pool2d_64x64x24x24_fwd_bwd", pool)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    dev_peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
    print(f"torch {torch.__version__} op-cases: {args.device}, {torch.get_num_threads()} thread(s), "
          f"median of {args.runs} runs after {args.warmup} warm-up")
    print(f"{'case':36s} {'median ms':>12s} {'min ms':>12s}")
    for name, med, mn in results:
        print(f"{name:36s} {med:12.4f} {mn:12.4f}")
    print(f"peak memory: {rss:.1f} MiB RSS" + (f", {dev_peak:.1f} MiB on {args.device}" if dev_peak else ""))
    if args.json:
        with open(args.json, "w") as f:
            for name, med, mn in results:
                f.write(json.dumps({"framework": "torch", "version": torch.__version__, "case": name,
                                    "device": args.device, "threads": args.threads, "median_ms": round(med, 5),
                                    "min_ms": round(mn, 5), "runs": args.runs, "warmup": args.warmup}) + "\n")
            f.write(json.dumps({"framework": "torch", "peak_rss_mib": round(rss, 1),
                                "peak_device_mib": round(dev_peak, 1)}) + "\n")


if __name__ == "__main__":
    main()
