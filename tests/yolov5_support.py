"""Small YOLOv5-like models for the import tests, built without YOLOv5's code.

The classes carry the names of YOLOv5's and the pruning tools' classes (the importer matches on names
only), take arbitrary irregular widths, and their plain PyTorch forward is the reference the imported
model is compared with. Checkpoints are saved as the tools save them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None, act=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU() if act is None else act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    def __init__(self, c1, c2, k=3, act=None):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, 1, act=act)

    def forward(self, x):
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class Bottleneck(nn.Module):
    def __init__(self, c1, hidden, c2, shortcut=True, act=None):
        super().__init__()
        self.cv1 = Conv(c1, hidden, 1, act=act)
        self.cv2 = Conv(hidden, c2, 3, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckPruned(Bottleneck):
    pass


class C3(nn.Module):
    """cv3(cat(m(cv1(x)), cv2(x))); `blocks` lists each bottleneck's (hidden, out) widths."""

    bottleneck = Bottleneck

    def __init__(self, c1, cv1out, cv2out, c2, blocks=(), shortcut=True, act=None):
        super().__init__()
        self.cv1 = Conv(c1, cv1out, act=act)
        self.cv2 = Conv(c1, cv2out, act=act)
        chain, width = [], cv1out
        for hidden, out in blocks:
            chain.append(self.bottleneck(width, hidden, out, shortcut, act))
            width = out
        self.m = nn.Sequential(*chain)
        self.cv3 = Conv(width + cv2out, c2, act=act)

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class C3Pruned(C3):
    bottleneck = BottleneckPruned


class C3PrunedNoRes(nn.Module):
    def __init__(self, c1, cv1out, cv2out, c2, act=None):
        super().__init__()
        self.cv1 = Conv(c1, cv1out, act=act)
        self.cv2 = Conv(c1, cv2out, act=act)
        self.cv3 = Conv(cv1out + cv2out, c2, act=act)

    def forward(self, x):
        return self.cv3(torch.cat([self.cv1(x), self.cv2(x)], 1))


class BottleneckCSP(nn.Module):
    """YOLOv5's older CSP block: BatchNorm + LeakyReLU over cat(cv3(m(cv1(x))), cv2(x)), then cv4."""

    def __init__(self, c1, hidden, c2, blocks=(), act=None):
        super().__init__()
        self.cv1 = Conv(c1, hidden, act=act)
        self.cv2 = nn.Conv2d(c1, hidden, 1, bias=False)
        self.cv3 = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.cv4 = Conv(2 * hidden, c2, act=act)
        self.bn = nn.BatchNorm2d(2 * hidden, eps=1e-3)
        self.act = nn.LeakyReLU(0.1)
        self.m = nn.Sequential(*[Bottleneck(hidden, inner, hidden, True, act) for inner in blocks])

    def forward(self, x):
        return self.cv4(self.act(self.bn(torch.cat([self.cv3(self.m(self.cv1(x))), self.cv2(x)], 1))))


class SPP(nn.Module):
    def __init__(self, c1, hidden, c2, act=None):
        super().__init__()
        self.cv1 = Conv(c1, hidden, act=act)
        self.cv2 = Conv(hidden * 4, c2, act=act)
        self.m = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13)])

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


class SPPPruned(SPP):
    pass


class SPPF(nn.Module):
    def __init__(self, c1, hidden, c2, act=None):
        super().__init__()
        self.cv1 = Conv(c1, hidden, act=act)
        self.cv2 = Conv(hidden * 4, c2, act=act)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class SPPFPruned(SPPF):
    pass


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.d = 1

    def forward(self, xs):
        return torch.cat(xs, self.d)


class C2f(Concat):
    """A YOLOv8 class name, which the importer must refuse."""


class Detect(nn.Module):
    """Raw heads of 1x1 convs; anchors stored in stride units, as YOLOv5 stores them."""

    def __init__(self, nc, anchors_px, channels, strides):
        super().__init__()
        self.nc, self.no = nc, nc + 5
        self.nl, self.na = len(anchors_px), len(anchors_px[0])
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in channels)
        self.stride = torch.tensor(strides, dtype=torch.float32)
        self.register_buffer("anchors", torch.tensor(anchors_px, dtype=torch.float32) / self.stride.view(-1, 1, 1))

    def forward(self, xs):
        return [conv(x) for conv, x in zip(self.m, xs, strict=True)]


class Model(nn.Module):
    """The root: `.model` of layers, each with `.f` (from) and `.i` (index), run as YOLOv5 runs them."""

    def __init__(self, layers, names):
        super().__init__()
        for index, (origin, module) in enumerate(layers):
            module.f, module.i, module.type = origin, index, type(module).__name__
        self.model = nn.Sequential(*(module for _, module in layers))
        self.names = names
        self.stride = self.model[-1].stride

    def forward(self, x):
        outputs = []
        for module in self.model:
            if module.f != -1:
                x = outputs[module.f] if isinstance(module.f, int) else [x if j == -1 else outputs[j]
                                                                         for j in module.f]
            x = module(x)
            outputs.append(x)
        return x


class ModelPruned(Model):
    pass


class DetectionModel(Model):
    pass


class ExportModel(nn.Module):
    """What YOLOv5's export.py exports: the model with the decode in the graph, one [1, N, 5+C] output."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, x):
        return decode_torch(self.inner(x), self.inner.model[-1])


ANCHORS = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]]]
STRIDES = [8, 16]


def v5_layout(rng: np.random.Generator, act=None, classes: int = 3) -> ModelPruned:
    """A v5.0-style pruned model: Focus stem, C3Pruned with residual BottleneckPruned, SPPPruned,
    C3PrunedNoRes; every width drawn from `rng` (largest stride 16)."""
    w = [int(v) for v in rng.integers(3, 24, 24)]
    a1, a2 = w[3], w[7]
    layers = [
        (-1, Focus(3, w[0], act=act)),
        (-1, Conv(w[0], w[1], 3, 2, act=act)),
        (-1, C3Pruned(w[1], a1, w[4], w[5], [(w[6], a1)], True, act)),
        (-1, Conv(w[5], w[8], 3, 2, act=act)),
        (-1, C3Pruned(w[8], a2, w[9], w[10], [(w[11], a2), (w[12], a2)], True, act)),
        (-1, Conv(w[10], w[13], 3, 2, act=act)),
        (-1, SPPPruned(w[13], w[14], w[15], act)),
        (-1, Conv(w[15], w[16], 1, 1, act=act)),
        (-1, nn.Upsample(None, 2, "nearest")),
        ([-1, 4], Concat()),
        (-1, C3PrunedNoRes(w[16] + w[10], w[17], w[18], w[19], act)),
        (-1, Conv(w[19], w[20], 3, 2, act=act)),
        ([-1, 7], Concat()),
        (-1, C3Pruned(w[20] + w[16], w[21], w[22], w[23], [(w[2], w[3])], False, act)),
        ([10, 13], Detect(classes, ANCHORS, [w[19], w[23]], STRIDES)),
    ]
    return ModelPruned(layers, [f"thing{i}" for i in range(classes)])


def v6_layout(rng: np.random.Generator, classes: int = 2) -> DetectionModel:
    """A v6-style model: 6x6 stride-2 stem, C3 + Bottleneck, BottleneckCSP (LeakyReLU), a ReLU conv, SPPF."""
    w = [int(v) for v in rng.integers(3, 24, 20)]
    layers = [
        (-1, Conv(3, w[0], 6, 2, 2)),
        (-1, Conv(w[0], w[1], 3, 2)),
        (-1, C3(w[1], w[2], w[3], w[4], [(w[5], w[2])], True)),
        (-1, Conv(w[4], w[6], 3, 2)),
        (-1, BottleneckCSP(w[6], w[7], w[8], [w[9]])),
        (-1, Conv(w[8], w[10], 3, 2, act=nn.ReLU())),
        (-1, SPPF(w[10], w[11], w[12])),
        (-1, Conv(w[12], w[13], 1, 1)),
        (-1, nn.Upsample(None, 2, "nearest")),
        ([-1, 4], Concat()),
        (-1, C3(w[13] + w[8], w[14], w[15], w[16], [(w[17], w[18])], False)),
        (-1, Conv(w[16], w[19], 3, 2)),
        ([-1, 7], Concat()),
        (-1, C3(w[19] + w[13], w[1], w[2], w[3], [(w[4], w[5])], False)),
        ([10, 13], Detect(classes, ANCHORS, [w[16], w[3]], STRIDES)),
    ]
    return DetectionModel(layers, {i: f"kind{i}" for i in range(classes)})


def randomize(model: nn.Module, seed: int, gamma=None) -> nn.Module:
    """BatchNorm statistics and affine values far from the identity, Detect biases like a trained head's."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                count = module.num_features
                module.weight.copy_(uniform(count, 0.2, 1.0) if gamma is None else gamma(count, generator))
                module.bias.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_var.copy_(uniform(count, 0.5, 1.5))
            elif isinstance(module, Detect):
                for conv in module.m:
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) - 1.0)
    return model.eval()


def decode_torch(raws: list[torch.Tensor], detect: Detect) -> torch.Tensor:
    """YOLOv5's decode: [1, N, 5+C], rows by level, anchor, y, x; xywh in input pixels."""
    rows = []
    for raw, stride, anchors in zip(raws, detect.stride, detect.anchors, strict=True):
        n, _, height, width = raw.shape
        s = raw.view(n, detect.na, detect.no, height, width).permute(0, 1, 3, 4, 2).sigmoid()
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        grid = torch.stack([xs, ys], -1).float()
        xy = (s[..., :2] * 2 - 0.5 + grid) * stride
        wh = (s[..., 2:4] * 2) ** 2 * (anchors * stride).view(1, detect.na, 1, 1, 2)
        rows.append(torch.cat([xy, wh, s[..., 4:]], -1).reshape(n, -1, detect.no))
    return torch.cat(rows, 1)


def reference(model: Model, image: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Raw heads and decoded rows of a u8 BGR [H, W, 3] image, preprocessed as YOLOv5 does."""
    x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        raws = model.float()(x)
        return [r.numpy() for r in raws], decode_torch(raws, model.model[-1]).numpy()
