#!/usr/bin/env python3
"""PyTorch side of the MLP-epoch benchmark: one epoch of the classic MNIST MLP (784-500-10, ReLU,
cross-entropy, Adam lr 1e-3, batch 64, shuffled) over IDX data preloaded as tensors.

Run beside `ember-bench mlp-epoch` with the same flags; tools/bench/run.sh does both and prints the
ratio. Prints one JSON line: {"framework": "torch", "device": ..., "seconds": ..., "images_per_s": ...}.
"""
import argparse
import gzip
import json
import os
import re
import struct
import time

import torch


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def find(dirname, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(dirname, name)
        if os.path.exists(p):
            return p
    raise SystemExit(f"missing {stem}[.gz] in {dirname}: run tools/get-data.sh")


def build_info():
    """What this PyTorch computes with: its BLAS (as built, and the library actually loaded), oneDNN's
    version, and the ISA its CPU kernels dispatched to."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # loads the BLAS if it is loaded lazily
    with open("/proc/self/maps") as f:
        loaded = sorted({os.path.basename(line.split()[-1]) for line in f
                         if re.search(r"(blas|mkl|blis)[^/]*\.so", line.split()[-1])})
    onednn = re.search(r"(?:MKL-DNN|oneDNN) v([\w.]+)", config)
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if capability is not None:
        isa = capability()
    else:  # PyTorch 1.13 prints it in its config instead
        m = re.search(r"CPU capability usage: (\S+)", config)
        isa = m.group(1) if m else "unknown"
    blas = blas.group(1) if blas else "unknown"
    # "generic" means whatever libblas the system resolves (Debian: its alternatives): name it. A
    # wheel's own BLAS (mkl) is linked in statically; the loaded list would only show numpy's.
    loaded = [name for name in loaded if "cublas" not in name]
    return {"blas": blas + (f" ({', '.join(loaded)})" if blas == "generic" and loaded else ""),
            "onednn": onednn.group(1) if onednn and torch.backends.mkldnn.is_available() else "off",
            "cpu_capability": isa}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: torch.autocast(device, dtype=torch.bfloat16) around forward and loss")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    images = read_idx(find(args.data, "train-images-idx3-ubyte"))
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte")).long()
    x_all = ((images.float() / 255.0 - 0.1307) / 0.3081).reshape(len(images), -1).to(dev)
    y_all = labels.to(dev)
    model = torch.nn.Sequential(torch.nn.Linear(784, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(x_all)
    best = None
    best_cpu = None  # process CPU time: on a shared machine, time spent descheduled is not counted
    for _ in range(args.epochs):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        c0 = time.process_time()
        perm = torch.randperm(n, device=dev)
        for i in range(0, n - args.batch_size + 1, args.batch_size):
            idx = perm[i:i + args.batch_size]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = loss_fn(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        dc = time.process_time() - c0
        best = dt if best is None else min(best, dt)
        best_cpu = dc if best_cpu is None else min(best_cpu, dc)
    print(json.dumps({"framework": "torch", "version": torch.__version__, **build_info(), "device": args.device,
                      "threads": args.threads, "precision": args.precision, "seconds": round(best, 4),
                      "cpu_seconds": round(best_cpu, 4),
                      "images_per_s": round(n / best, 1), "final_loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
