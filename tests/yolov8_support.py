"""Small YOLOv8 / YOLO11-like models for the import tests, built without Ultralytics' code.

The classes carry the names of Ultralytics' (and Torch-Pruning's, and the slimming fork's) classes, which is
all the importer matches on; they take irregular widths, and their plain PyTorch forward (Ultralytics' own
formulas, written out here) is the reference the imported model is compared with.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

ACT = nn.SiLU()  # one shared instance, as Ultralytics' Conv.default_act


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = ACT if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DWConv(Conv):
    def __init__(self, c1, c2, k=1, s=1, act=True):
        super().__init__(c1, c2, k, s, math.gcd(c1, c2), act)


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, e=1.0):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 3)
        self.cv2 = Conv(hidden, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3k(nn.Module):
    def __init__(self, c1, c2, n=2, shortcut=True, e=0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden)
        self.cv2 = Conv(c1, hidden)
        self.cv3 = Conv(2 * hidden, c2)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, 1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=False, e=0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(self.block(shortcut) for _ in range(n))

    def block(self, shortcut):
        return Bottleneck(self.c, self.c, shortcut, 1.0)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C3k2(C2f):
    def __init__(self, c1, c2, n=1, c3k=False, shortcut=True, e=0.5):
        self.c3k = c3k
        super().__init__(c1, c2, n, shortcut, e)

    def block(self, shortcut):
        return C3k(self.c, self.c, 2, shortcut) if self.c3k else Bottleneck(self.c, self.c, shortcut, 0.5)


class C2f_v2(nn.Module):
    """Torch-Pruning's C2f with cv1 split into cv0 and cv1 (so each half is pruned on its own)."""

    def __init__(self, c1, half0, half1, c2, n=1, shortcut=True):
        super().__init__()
        self.cv0, self.cv1 = Conv(c1, half0), Conv(c1, half1)
        self.m = nn.ModuleList(Bottleneck(half1, half1, shortcut, 1.0) for _ in range(n))
        self.cv2 = Conv(half0 + (1 + n) * half1, c2)

    def forward(self, x):
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2fPruned(nn.Module):
    """The slimming fork's C2f: cv1 split into uneven sections."""

    def __init__(self, c1, sections, c2, shortcut=False):
        super().__init__()
        self.cv1_split_sections = list(sections)
        self.cv1 = Conv(c1, sum(sections))
        self.m = nn.ModuleList([Bottleneck(sections[1], sections[1], shortcut, 1.0)])
        self.cv2 = Conv(sum(sections) + sections[1], c2)

    def forward(self, x):
        y = list(self.cv1(x).split(self.cv1_split_sections, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden)
        self.cv2 = Conv(hidden * 4, c2)
        self.m = nn.MaxPool2d(k, 1, k // 2)
        self.n, self.add = 3, False

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(self.n))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.key_dim = self.head_dim // 2
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, act=False)
        self.proj = Conv(dim, dim, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], 2)
        attention = ((q.transpose(-2, -1) @ k) * self.scale).softmax(-1)
        y = (v @ attention.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(y)


class PSABlock(nn.Module):
    def __init__(self, c, num_heads):
        super().__init__()
        self.attn = Attention(c, num_heads)
        self.ffn = nn.Sequential(Conv(c, 2 * c), Conv(2 * c, c, act=False))
        self.add = True

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    def __init__(self, c1, c2, num_heads):
        super().__init__()
        self.c = c1 // 2
        self.cv1 = Conv(c1, 2 * self.c)
        self.cv2 = Conv(2 * self.c, c2)
        self.m = nn.Sequential(PSABlock(self.c, num_heads))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), 1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.d = 1

    def forward(self, xs):
        return torch.cat(xs, self.d)


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """Per level a box branch (4 x reg_max) and a class branch; forward: the raw maps and Ultralytics' decode."""

    def __init__(self, nc, channels, strides, v11=False, reg_max=16):
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no = nc, len(channels), reg_max, nc + 4 * reg_max
        c2, c3 = max(16, channels[0] // 4, 4 * reg_max), max(channels[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in channels)
        self.cv3 = nn.ModuleList(
            nn.Sequential(nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)), nn.Sequential(DWConv(c3, c3, 3),
                          Conv(c3, c3, 1)), nn.Conv2d(c3, nc, 1)) if v11 else
            nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in channels)
        self.dfl = DFL(reg_max)
        self.stride = torch.tensor(strides, dtype=torch.float32)

    def forward(self, xs):
        raws = [torch.cat((box(x), score(x)), 1) for box, score, x in zip(self.cv2, self.cv3, xs, strict=True)]
        return raws, decode_torch(raws, self)


def decode_torch(raws: list[torch.Tensor], detect: Detect) -> torch.Tensor:
    """Ultralytics' decode: [1, 4 + C, N], anchors by level, y, x; cx, cy, w, h in input pixels, class sigmoids."""
    anchors, strides = [], []
    for raw, stride in zip(raws, detect.stride, strict=True):
        _, _, height, width = raw.shape
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        anchors.append(torch.stack((xs, ys), -1).view(-1, 2))
        strides.append(torch.full((height * width, 1), float(stride)))
    anchor_points, stride_tensor = torch.cat(anchors).T[None], torch.cat(strides).T
    flat = torch.cat([raw.view(raw.shape[0], detect.no, -1) for raw in raws], 2)
    box, cls = flat.split((4 * detect.reg_max, detect.nc), 1)
    left_top, right_bottom = detect.dfl(box).chunk(2, 1)
    x1y1, x2y2 = anchor_points - left_top, anchor_points + right_bottom
    boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_tensor
    return torch.cat((boxes, cls.sigmoid()), 1)


class DetectionModel(nn.Module):
    """The root: `.model` of layers with `.f` (from) and `.i` (index), run as Ultralytics runs them."""

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


class DetectionModelPruned(DetectionModel):
    pass


STRIDES = [8, 16]


def v11_layout(classes: int = 3, heads: int = 2) -> DetectionModel:
    """A small YOLO11: C3k2 with Bottlenecks and with C3k, SPPF, C2PSA (`heads` attention heads), a DWConv head."""
    layers = [
        (-1, Conv(3, 8, 3, 2)),
        (-1, Conv(8, 16, 3, 2)),
        (-1, C3k2(16, 16, 1, False)),
        (-1, Conv(16, 24, 3, 2)),
        (-1, C3k2(24, 24, 1, True)),
        (-1, Conv(24, 32, 3, 2)),
        (-1, SPPF(32, 32)),
        (-1, C2PSA(32, 32, heads)),
        (-1, nn.Upsample(None, 2, "nearest")),
        ([-1, 4], Concat()),
        (-1, C3k2(56, 24, 1, False, False)),
        (-1, Conv(24, 24, 3, 2)),
        ([-1, 7], Concat()),
        (-1, C3k2(56, 32, 1, True)),
        ([10, 13], Detect(classes, [24, 32], STRIDES, v11=True)),
    ]
    return DetectionModel(layers, {i: f"kind{i}" for i in range(classes)})


def pruned_v8_layout(classes: int = 2) -> DetectionModelPruned:
    """A pruned YOLOv8: Torch-Pruning's C2f_v2 and the slimming fork's uneven C2fPruned, odd widths, v8 head."""
    layers = [
        (-1, Conv(3, 7, 3, 2)),
        (-1, Conv(7, 13, 3, 2)),
        (-1, C2f_v2(13, 5, 6, 11, 2, True)),
        (-1, Conv(11, 19, 3, 2)),
        (-1, C2fPruned(19, (9, 14), 21, True)),
        (-1, Conv(21, 23, 3, 2)),
        (-1, SPPF(23, 17)),
        (-1, nn.Upsample(None, 2, "nearest")),
        ([-1, 4], Concat()),
        (-1, C2fPruned(38, (7, 10), 15, False)),
        (-1, Conv(15, 9, 3, 2)),
        ([-1, 6], Concat()),
        (-1, C2f(26, 18, 1, False)),
        ([9, 12], Detect(classes, [15, 18], STRIDES)),
    ]
    return DetectionModelPruned(layers, {i: str(i) for i in range(classes)})


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """BatchNorm statistics and affine values far from the identity; box biases that make the DFL softmax uneven."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                count = module.num_features
                module.weight.copy_(0.2 + 0.8 * torch.rand(count, generator=generator))
                module.bias.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(count, generator=generator))
            elif isinstance(module, Detect):
                for branch in (*module.cv2, *module.cv3):
                    branch[-1].bias.copy_(torch.randn(branch[-1].bias.shape, generator=generator))
    return model.eval()


def reference(model: DetectionModel, image: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Raw per-level maps and decoded [1, 4 + C, N] of a u8 BGR [H, W, 3] image, preprocessed as Ultralytics."""
    x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        raws, decoded = model.float()(x)
    return [raw.numpy() for raw in raws], decoded.numpy()
