#!/usr/bin/env python3
"""PyTorch side of the convnet benchmarks, the same models and setup as ember's:
  --mode step   one training step of the classic MNIST CNN at batch B (Adam lr 1e-3) and the
                forward / backward of each convolution alone; beside `ember-bench cnn-step`.
                --precision bf16 runs the forward and the loss under torch.autocast(device, bfloat16)
                (as `ember-bench cnn-step --precision bf16` runs them under ember::autocast); the
                step's best process CPU time (time.process_time) is reported beside its wall time.
  --mode train  --model cnn|resnet trained for N epochs (Adam lr 1e-3, batch 64, shuffled, MNIST
                normalisation 0.1307 / 0.3081) on an IDX folder, with the test accuracy after each
                epoch and the process's peak resident memory; beside `ember-mnist --model ...`.
                --crop-padding P / --hflip augment the training images as ember-mnist's
                --aug-crop-padding P / --aug-hflip do: pad each side with P black pixels and crop
                28x28 back at a random offset, mirror left-right with probability 1/2.
Prints JSON lines. The CNN is PyTorch's examples/mnist Net; the ResNet is ember's
models::small_resnet (3x3 stem 16, three stages of two BasicBlocks, widths 16/32/64, global
average pool, fc), written here with torch.nn so Debian's PyTorch (no torchvision) runs it too.
"""
import argparse
import contextlib
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mlp_epoch import build_info, find, read_idx  # noqa: E402


def mnist_cnn(rows=28, cols=28, classes=10):
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * ((rows - 4) // 2) * ((cols - 4) // 2), 128),
                         nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, classes))


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class SmallResNet(nn.Module):
    """ember-mnist --model resnet --resnet-widths W --resnet-blocks B: 3x3 stem of widths[0], one stage
    of blocks[i] BasicBlocks per width (stage 1 stride 1, each later one stride 2), average pool, fc."""

    def __init__(self, classes=10, widths=(16, 32, 64), blocks=(2, 2, 2), fc_dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        inplanes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(inplanes, planes, 1 if i == 0 else 2)] + [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))  # torchvision's names, as ember's
            inplanes = planes
        self.stages = len(widths)
        self.dropout = nn.Dropout(fc_dropout) if fc_dropout > 0 else nn.Identity()  # before fc; 0: none
        self.fc = nn.Linear(inplanes, classes)
        for m in self.modules():  # torchvision's initialisation, as ember's ResNet
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


def best_time(reps, fn, dev):
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def step_mode(args):
    dev = torch.device(args.device)
    model = mnist_cnn().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)
    info = {"framework": "torch", "version": torch.__version__, "device": args.device, "threads": args.threads,
            "batch": args.batch_size, "precision": args.precision}

    def amp():
        if args.precision == "bf16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def report(name, s, cpu_s=None):
        row = {**info, "op": name, "ms": round(s * 1e3, 3)}
        if cpu_s is not None:
            row["cpu_ms"] = round(cpu_s * 1e3, 3)
        print(json.dumps(row))

    def step():
        with amp():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    best_wall = best_cpu = float("inf")
    for _ in range(args.reps):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    report("cnn_train_step", best_wall, best_cpu)
    # The convolutions alone, in the step's precision. Each timing opens its own autocast scope:
    # autocast caches a weight's bf16 cast for the scope, and a cast made under no_grad (the forward
    # timings) has no grad_fn, so a backward through it in the same scope would fail.
    conv1, conv2 = model[0], model[2]
    h = torch.randn(args.batch_size, 32, 26, 26, device=dev, requires_grad=True)
    g1 = torch.randn(args.batch_size, 32, 26, 26, device=dev)
    g2 = torch.randn(args.batch_size, 64, 24, 24, device=dev)

    def in_amp(fn):
        def run():
            with amp():
                fn()
        return run

    with torch.no_grad():
        report("conv1_forward", best_time(args.reps, in_amp(lambda: conv1(x)), dev))
        report("conv2_forward", best_time(args.reps, in_amp(lambda: conv2(h)), dev))
    for name, conv, inp, g in (("conv1_backward", conv1, x, g1), ("conv2_backward", conv2, h, g2)):
        both = best_time(args.reps, in_amp(lambda: (lambda y: y.backward(g.to(y.dtype)))(conv(inp))), dev)
        fwd = best_time(args.reps, in_amp(lambda: conv(inp)), dev)
        report(name, both - fwd)
    print(json.dumps({**info, **build_info()}))


def train_mode(args):
    def load(prefix):  # pixels in [0, 1]; normalised per batch, after augmentation
        images = read_idx(find(args.data, prefix + "-images-idx3-ubyte"))
        labels = read_idx(find(args.data, prefix + "-labels-idx1-ubyte")).long()
        return (images.float() / 255.0).unsqueeze(1), labels

    def normalise(x):
        return (x - 0.1307) / 0.3081

    def augment(x):  # x [B, 1, H, W] in [0, 1]: black padding (0 before normalisation), as ember's loader
        p = args.crop_padding
        if p > 0:
            padded = F.pad(x, (p, p, p, p))
            off = torch.randint(0, 2 * p + 1, (len(x), 2))
            x = torch.stack([padded[i, :, oy:oy + x.shape[2], ox:ox + x.shape[3]] for i, (oy, ox) in enumerate(off.tolist())])
        if args.hflip:
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x

    x_train, y_train = load("train")
    x_test, y_test = load("t10k")
    x_test = normalise(x_test)
    model = mnist_cnn(x_train.shape[2], x_train.shape[3]) if args.model == "cnn" else SmallResNet(10, args.widths, args.blocks, args.fc_dropout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs) if args.scheduler == "cosine" else None
    n = len(x_train)
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, args.batch_size):
            idx = perm[i:i + args.batch_size]
            loss = F.cross_entropy(model(normalise(augment(x_train[idx]))), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        if sched is not None:
            sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_test), 1000):
                correct += (model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum().item()
        print(json.dumps({"framework": "torch", "version": torch.__version__, "model": args.model, "seed": args.seed,
                          **({"widths": args.widths, "blocks": args.blocks, "fc_dropout": args.fc_dropout} if args.model == "resnet" else {}),
                          "crop_padding": args.crop_padding, "hflip": args.hflip, "scheduler": args.scheduler, "epoch": epoch,
                          "train_seconds": round(seconds, 2), "test_accuracy": round(100.0 * correct / len(x_test), 2),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}),
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["step", "train"], default="step")
    ap.add_argument("--model", choices=["cnn", "resnet"], default="cnn")
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    ap.add_argument("--widths", type=ints, default=(16, 32, 64), help="--model resnet: as ember-mnist --resnet-widths")
    ap.add_argument("--fc-dropout", type=float, default=0.0, help="--model resnet: dropout before fc (0: none)")
    ap.add_argument("--blocks", type=ints, default=(2, 2, 2), help="--model resnet: as ember-mnist --resnet-blocks")
    ap.add_argument("--crop-padding", type=int, default=0, help="--mode train: as ember-mnist --aug-crop-padding")
    ap.add_argument("--hflip", action="store_true", help="--mode train: as ember-mnist --aug-hflip")
    ap.add_argument("--scheduler", choices=["none", "cosine"], default="none",
                    help="--mode train: as ember-mnist --scheduler (cosine: CosineAnnealingLR to 0 over --epochs, stepped per epoch)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="--mode step: bf16 runs forward and loss under torch.autocast(bfloat16)")
    args = ap.parse_args()
    if len(args.widths) != len(args.blocks):
        ap.error(f"--widths has {len(args.widths)} stages and --blocks {len(args.blocks)}; give one block count per width")
    if args.crop_padding < 0:
        ap.error(f"--crop-padding {args.crop_padding} must be 0 or more")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    step_mode(args) if args.mode == "step" else train_mode(args)


if __name__ == "__main__":
    main()
