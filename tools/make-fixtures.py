#!/usr/bin/env python3
"""Makes tests/fixtures/pth/: torch.save archives that tests/io/test_pth.cpp loads with ember, and
PyTorch's forward outputs for the ResNet ones.

Run by hand (not in CI), from the repository root, with Debian's PyTorch (python3-torch, 1.13):
    /usr/bin/python3 tools/make-fixtures.py
torchvision is not needed: the ResNets below are torchvision's layout rebuilt with torch.nn (the
same module names, so the same state_dict keys: conv1, bn1, layer1.0.conv1, layer2.0.downsample.0,
fc, ...). When torchvision is importable, the script also checks that torchvision's resnet18 and
resnet50 have exactly these keys and shapes.

    /work/main/.venv-torch/bin/python tools/make-fixtures.py --resnet18 /tmp/resnet18
writes a full-size, randomly initialised torchvision resnet18 state_dict (about 45 MB, not for the
repository) as /tmp/resnet18.pth with its input and output in /tmp/resnet18-io.pth, for
`ember_tests --gtest_filter=PthResNet18.*` (EMBER_RESNET18=/tmp/resnet18).

    /work/main/.venv-torch/bin/python tools/make-fixtures.py --layout-only
adds layout-torch2.pth, the layout fixture as PyTorch 2.x writes it (extra records, 64-byte alignment).

    /work/main/.venv-torch/bin/python tools/make-fixtures.py --vgg
writes vgg.json (torchvision's vgg11/vgg11_bn/vgg16/vgg16_bn/resnet101 keys and shapes, checked against
the torch.nn rebuilds here) and vgg_bn.pth with vgg_bn-io.pth (a reduced VGG with batch norm).

Every file is written by torch.save; inputs come from a seeded generator; the models run in eval
mode (batch norm with their random running statistics), in f32.
"""
import argparse
import collections
import os
import zipfile

import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pth")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet(nn.Module):
    """torchvision.models.ResNet's layout with configurable widths (torchvision's are 64..512)."""

    def __init__(self, block, layers, widths, num_classes, in_channels=3):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (n, w) in enumerate(zip(layers, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, w, n, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG(nn.Module):
    """torchvision's VGG layout (features.N, avgpool, classifier.0/3/6) with the width of the
    classifier as a parameter, so a reduced one fits a fixture."""

    def __init__(self, cfg, batch_norm, num_classes, in_channels=3, pool=7, hidden=4096):
        super().__init__()
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(nn.Linear(c * pool * pool, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def torchvision_keys(out_dir):
    """vgg.json: the keys and shapes of torchvision's vgg11, vgg11_bn, vgg16, vgg16_bn and resnet101
    state_dicts (checked first against the torch.nn rebuilds above), for the ember test that builds
    the full-size models; and vgg_bn.pth / vgg_bn-io.pth, a reduced VGG with batch norm and
    PyTorch's output on a fixed input."""
    import json
    import torchvision
    tv = torchvision.models
    pairs = {"vgg11": (VGG(VGG_A, False, 1000), tv.vgg11()), "vgg11_bn": (VGG(VGG_A, True, 1000), tv.vgg11_bn()),
             "vgg16": (VGG(VGG_D, False, 1000), tv.vgg16()), "vgg16_bn": (VGG(VGG_D, True, 1000), tv.vgg16_bn()),
             "resnet101": (ResNet(Bottleneck, [3, 4, 23, 3], [64, 128, 256, 512], 1000), tv.resnet101())}
    keys = collections.OrderedDict()
    for name, (ours, theirs) in pairs.items():
        a = [[k, list(v.shape)] for k, v in ours.state_dict().items()]
        b = [[k, list(v.shape)] for k, v in theirs.state_dict().items()]
        assert a == b, f"{name}: layout differs from torchvision"
        keys[name] = b
    keys["torchvision"] = torchvision.__version__
    with open(os.path.join(out_dir, "vgg.json"), "w") as f:
        json.dump(keys, f, separators=(",", ":"))
    print(f"torchvision {torchvision.__version__}: vgg11/vgg11_bn/vgg16/vgg16_bn/resnet101 keys -> vgg.json")


def randomize_bn(model, gen):
    """Batch norms with non-trivial affine parameters and running statistics, so eval mode tests them."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(7)


def save_model(name, model, input_shape, gen, out_dir):
    randomize_bn(model, gen)
    model.eval()
    x = torch.rand(input_shape, generator=gen) * 2 - 1
    with torch.no_grad():
        y = model(x)
    torch.save(model.state_dict(), os.path.join(out_dir, f"{name}.pth"))
    torch.save(collections.OrderedDict(input=x, output=y), os.path.join(out_dir, f"{name}-io.pth"))
    print(f"{name}: {sum(p.numel() for p in model.state_dict().values())} values, output {list(y.shape)}")


def check_against_torchvision():
    try:
        import torchvision
    except ImportError:
        print("torchvision not importable: key check against torchvision skipped")
        return
    for ours, theirs in ((ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], 1000), torchvision.models.resnet18()),
                         (ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], 1000), torchvision.models.resnet50())):
        a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        b = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        assert list(a) == list(b) and a == b, "layout differs from torchvision"
    print(f"torchvision {torchvision.__version__}: resnet18/resnet50 keys and shapes identical")


def layout_dict():
    """Strides, offsets, shared storages, a Parameter and every dtype ember reads; the values are
    formulas tests/io/test_pth.cpp recomputes."""
    base = torch.arange(24, dtype=torch.float32) * 0.5 - 3  # shared by four tensors below
    sd = collections.OrderedDict()
    sd["base"] = base
    sd["transposed"] = base.view(4, 6).t()  # [6, 4], stride (1, 6)
    sd["offset_slice"] = base[5:11]  # storage offset 5
    sd["strided"] = base.view(4, 6)[1:, ::2]  # [3, 3], stride (6, 2), offset 6
    sd["param"] = nn.Parameter(torch.arange(6, dtype=torch.float32).view(2, 3) / 4)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    n = torch.arange(10)
    sd["f64"] = n.double() * 0.25 - 1
    sd["f16"] = (n.float() * 0.25 - 1).half()
    sd["bf16"] = (n.float() * 0.25 - 1).bfloat16()
    sd["i64"] = n * 1_000_000_007 - 3
    sd["i32"] = (n * 7 - 20).int()
    sd["u8"] = (n * 25).to(torch.uint8)
    sd["bool"] = n % 3 == 0
    return sd


def deflate_copy(src, dst):
    """The same archive with every entry deflated (other zip writers do this; torch never does)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout-only", action="store_true",
                    help="write only layout-torch<major>.pth (to add a second writer's version of layout.pth)")
    ap.add_argument("--resnet18", metavar="PREFIX", help="write a full-size torchvision resnet18 to PREFIX.pth")
    ap.add_argument("--vgg", action="store_true",
                    help="write only vgg.json (needs torchvision) and the reduced VGG fixture vgg_bn.pth")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(20261201)
    torch.manual_seed(20261201)
    if args.vgg:
        os.makedirs(OUT, exist_ok=True)
        torchvision_keys(OUT)
        # Two stages, batch norm, the adaptive pool taking 8x8 to 7x7 (overlapping windows), hidden 16.
        save_model("vgg_bn", VGG([4, "M", 8, 8, "M"], True, 5, pool=7, hidden=16), (2, 3, 32, 32), gen, OUT)
        return
    if args.resnet18:
        import torchvision
        model = torchvision.models.resnet18()
        randomize_bn(model, gen)
        model.eval()
        x = torch.rand(2, 3, 224, 224, generator=gen) * 2 - 1
        with torch.no_grad():
            y = model(x)
        torch.save(model.state_dict(), args.resnet18 + ".pth")
        torch.save(collections.OrderedDict(input=x, output=y), args.resnet18 + "-io.pth")
        print(f"torchvision {torchvision.__version__} resnet18 -> {args.resnet18}.pth, output {list(y.shape)}")
        return
    os.makedirs(OUT, exist_ok=True)
    if args.layout_only:
        torch.save(layout_dict(), os.path.join(OUT, f"layout-torch{torch.__version__.split('.')[0]}.pth"))
        return
    check_against_torchvision()
    # resnet18's layout (BasicBlock, [2, 2, 2, 2]) and resnet50's (Bottleneck) at reduced width.
    save_model("resnet_basic", ResNet(BasicBlock, [2, 2, 2, 2], [4, 8, 8, 16], 5), (2, 3, 32, 32), gen, OUT)
    save_model("resnet_bottleneck", ResNet(Bottleneck, [1, 2, 1, 1], [2, 4, 4, 8], 3), (2, 3, 32, 32), gen, OUT)
    save_model("resnet_gray", ResNet(BasicBlock, [1, 1, 1, 1], [4, 4, 8, 8], 10, in_channels=1), (3, 1, 28, 28), gen, OUT)
    path = os.path.join(OUT, "layout.pth")
    torch.save(layout_dict(), path)
    deflate_copy(path, os.path.join(OUT, "layout-deflated.pth"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"torch {torch.__version__}: {len(os.listdir(OUT))} files, {total} bytes in {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
