#!/usr/bin/env python3
"""PyTorch's side of ember-mnist --eval CKPT --int8: the same checkpoint's model (mlp or cnn) in fp32
and quantised by PyTorch's eager post-training static quantisation (per-channel weights, the quantized
engine given, min-max observers, calibrated on the first 512 training images), accuracy and inference
images/s on the test set, the fastest of at least 3 interleaved passes (until each has run 1 s, at most 50), in one run.

  /usr/bin/python3 tools/bench/int8_torch.py --model cnn --ckpt /tmp/cmp/cnn.safetensors --threads 1
"""
import argparse
import gzip
import json
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.ao.quantization as tq


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype=np.float32).copy().reshape(v["shape"]))
    return out


def load_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    return np.frombuffer(raw[4 + 4 * dims :], dtype=np.uint8).reshape(shape)


class Mlp(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.fc0, self.relu, self.fc2 = nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)

    def forward(self, x):
        return self.dequant(self.fc2(self.relu(self.fc0(self.quant(x)))))

    fuse = [["fc0", "relu"]]


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv1, self.relu1 = nn.Conv2d(1, 32, 3), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(32, 64, 3), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(self.quant(x))))))
        return self.dequant(self.fc2(self.relu3(self.fc1(torch.flatten(x, 1)))))

    fuse = [["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["mlp", "cnn"], required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--engine", default="onednn")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.quantized.engine = a.engine
    sd = load_safetensors(a.ckpt)
    if a.model == "mlp":
        m = Mlp(sd["0.weight"].shape[0])
        m.load_state_dict({"fc0.weight": sd["0.weight"], "fc0.bias": sd["0.bias"], "fc2.weight": sd["2.weight"],
                           "fc2.bias": sd["2.bias"]})
    else:
        m = Cnn()
        m.load_state_dict({k: sd[k] for k in ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                               "fc1.bias", "fc2.weight", "fc2.bias"]})
    m.eval()
    norm = lambda u8: torch.from_numpy((u8.astype(np.float32) / 255 - 0.1307) / 0.3081)
    xtr = norm(load_idx(f"{a.data}/train-images-idx3-ubyte.gz")[:512])
    xte = norm(load_idx(f"{a.data}/t10k-images-idx3-ubyte.gz"))
    yte = torch.from_numpy(load_idx(f"{a.data}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    shape = (-1, 784) if a.model == "mlp" else (-1, 1, 28, 28)
    xtr, xte = xtr.reshape(shape), xte.reshape(shape)

    q = type(m)() if a.model == "cnn" else Mlp(m.fc0.out_features)
    q.load_state_dict(m.state_dict())
    q.eval()
    q = tq.fuse_modules(q, q.fuse)
    q.qconfig = tq.get_default_qconfig(a.engine)
    tq.prepare(q, inplace=True)
    with torch.no_grad():
        q(xtr)
    tq.convert(q, inplace=True)

    def run(model):
        t, correct = 0.0, 0
        with torch.inference_mode():
            for i in range(0, len(xte), 1000):
                x = xte[i : i + 1000]
                t0 = time.perf_counter()
                out = model(x)
                t += time.perf_counter() - t0
                correct += int((out.argmax(1) == yte[i : i + 1000]).sum())
        return correct / len(xte), t

    best, total, reps = {}, {"fp32": 0.0, "int8": 0.0}, 0
    while reps < 50 and (reps < 3 or min(total.values()) < 1.0):
        for name, model in (("fp32", m), ("int8", q)):
            acc, t = run(model)
            total[name] += t
            if name not in best or t < best[name][1]:
                best[name] = (acc, t)
        reps += 1
    ips = {k: len(xte) / v[1] for k, v in best.items()}
    print(f"torch {torch.__version__} ({a.engine} int8, {a.threads} thread(s)), {a.model}:")
    for k in ("fp32", "int8"):
        print(f"  {k}: accuracy {100 * best[k][0]:.2f}%, {ips[k]:.0f} images/s")
    print(f"  int8 vs fp32: speed x{ips['int8'] / ips['fp32']:.2f} (best of {reps} passes)")


if __name__ == "__main__":
    main()
