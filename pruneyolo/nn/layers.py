"""Darknet layers as PyTorch modules, with darknet's exact semantics.

This file imports only torch and numpy: codegen pastes it into every generated model file, so the
generated file and the in-process module run the very same layer code.
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-6  # darknet.weights.BN_EPS (this file imports nothing of pruneyolo's), not PyTorch's 1e-5


class HardMish(nn.Module):
    """darknet's hard_mish: x for x > 0, x*x/2 + x for -2 < x <= 0, else 0."""

    def forward(self, x):
        return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


class ConvBlock(nn.Module):
    """Convolution, optional BatchNorm, activation module (None: linear); `has_conv=False`: BatchNorm + activation."""

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=(1, 1), padding=0, groups=1,
                 dilation=1, batch_normalize=True, activation=None, has_conv=True, has_bias=True):
        super().__init__()
        use_bias = has_bias and not batch_normalize
        self.conv = (nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                               bias=use_bias) if has_conv else None)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS) if batch_normalize else None
        self.act = activation or nn.Identity()

    def share_arrays(self, other):
        """Run with `other`'s convolution and BatchNorm tensors (darknet's share_index); keeps own activation."""
        self.conv, self.bn = other.conv, other.bn
        return self

    def forward(self, x):
        if self.conv is not None:
            x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def darknet_tensors(self):
        """Parameters in .weights order: bias (or BN beta), BN gamma/mean/variance, kernel; absent ones skipped."""
        tensors = []
        if self.bn is not None:
            tensors += [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var]
        elif self.conv is not None and self.conv.bias is not None:
            tensors.append(self.conv.bias)
        if self.conv is not None:
            tensors.append(self.conv.weight)
        return tensors

    def load_darknet_floats(self, floats, offset):
        """Copy this block's values from a flat float32 array at `offset`; return the next offset."""
        with torch.no_grad():
            for tensor in self.darknet_tensors():
                count = tensor.numel()
                if offset + count > len(floats):
                    raise ValueError(f"weights file too short: needs more than {len(floats)} floats")
                tensor.copy_(torch.from_numpy(floats[offset:offset + count].copy()).view_as(tensor))
                offset += count
        return offset


class MaxPool(nn.Module):
    """darknet maxpool: -inf padding (left, right, top, bottom) so every darknet window is reproduced."""

    def __init__(self, kernel_size, stride=(1, 1), pads=(0, 0, 0, 0)):
        super().__init__()
        self.kernel_size, self.stride, self.pads = kernel_size, stride, pads

    def forward(self, x):
        if any(self.pads):
            x = F.pad(x, self.pads, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by an integer factor (expand + reshape: no Interpolate op), times `scale`."""

    def __init__(self, stride=2, scale=1.0):
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.stride
        x = x.reshape(n, c, h, 1, w, 1).expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)
        return x * self.scale if self.scale != 1.0 else x


class Reorg(nn.Module):
    """Space-to-depth: 'darknet' ([reorg3d]), 'focus' (yolov5 order), 'darknet_old' (yolov2's [reorg])."""

    def __init__(self, stride=2, mode="darknet"):
        super().__init__()
        self.stride, self.mode = stride, mode

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.stride
        if self.mode == "darknet_old":
            # darknet reads the C x H x W input as (C/s^2) x (H*s) x (W*s) and scatters it into C x H x W
            blocks = x.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
            return blocks.reshape(n, c * s * s, h // s, w // s)
        blocks = x.reshape(n, c, h // s, s, w // s, s)
        order = (0, 5, 3, 1, 2, 4) if self.mode == "focus" else (0, 3, 5, 1, 2, 4)
        return blocks.permute(*order).reshape(n, c * s * s, h // s, w // s)


class Route(nn.Module):
    """Concatenate inputs along channels; with groups, each input gives slice `group_id` of `groups`."""

    def __init__(self, groups=1, group_id=0):
        super().__init__()
        self.groups, self.group_id = groups, group_id

    def forward(self, *inputs):
        if self.groups > 1:
            parts = []
            for x in inputs:
                size = x.shape[1] // self.groups
                parts.append(x[:, self.group_id * size:(self.group_id + 1) * size])
            inputs = parts
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)


class Shortcut(nn.Module):
    """Residual add over the channels each input shares with the first, then an activation."""

    def __init__(self, activation=None):
        super().__init__()
        self.act = activation or nn.Identity()

    def forward(self, x, *others):
        for other in others:
            channels, other_channels = x.shape[1], other.shape[1]
            if other_channels == channels:
                x = x + other
            elif other_channels > channels:
                x = x + other[:, :channels]
            else:
                x = torch.cat([x[:, :other_channels] + other, x[:, other_channels:]], 1)
        return self.act(x)


class ScaleChannels(nn.Module):
    """Multiply a C x H x W map by per-channel C x 1 x 1 scales."""

    def forward(self, scales, x):
        return x * scales


class Sam(nn.Module):
    """Spatial attention: element-wise product."""

    def forward(self, x, other):
        return x * other


class GlobalAvgPool(nn.Module):
    """Average over all spatial positions, keeping C x 1 x 1."""

    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class Attention(nn.Module):
    """Self-attention of every position on every other, per head: the input holds all heads' queries, then
    keys (key_dim channels each), then values; the output is each head's values weighted by the attention."""

    def __init__(self, heads, key_dim):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim

    def forward(self, x):
        n, c, h, w = x.shape
        keys = self.heads * self.key_dim
        q, k, v = x.flatten(2).split([keys, keys, c - 2 * keys], 1)
        q = q.reshape(n, self.heads, self.key_dim, h * w)
        k = k.reshape(n, self.heads, self.key_dim, h * w)
        v = v.reshape(n, self.heads, -1, h * w)
        attention = torch.softmax((q.transpose(-2, -1) @ k) * self.key_dim ** -0.5, -1)
        return (v @ attention.transpose(-2, -1)).reshape(n, -1, h, w)


def dfl_distances(bins: torch.Tensor) -> torch.Tensor:
    """Distance bins [..., 4, reg_max] -> each side's distance (left, top, right, bottom) in grid cells [..., 4]:
    the expectation of a softmax over 0..reg_max-1 (Distribution Focal Loss decoding)."""
    steps = torch.arange(bins.shape[-1], dtype=bins.dtype, device=bins.device)
    return (torch.softmax(bins, -1) * steps).sum(-1)


class YoloDecode(nn.Module):
    """Raw head [N, A*(5+C), h, w] -> [N, A*h*w, 5+C]: (cx, cy, w, h) in input pixels, objectness, classes.

    'dfl' (anchor-free) heads hold 4 x reg_max distance bins then C class logits; their objectness is 1.
    """

    def __init__(self, anchors, stride_xy, decode="darknet", scale_x_y=1.0, reg_max=0):
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(1, -1, 1, 1, 2))
        self.stride_xy, self.decode, self.scale_x_y, self.reg_max = stride_xy, decode, scale_x_y, reg_max

    def forward(self, raw):
        n, _, h, w = raw.shape
        count = self.anchors.shape[1]
        p = raw.view(n, count, -1, h, w).permute(0, 1, 3, 4, 2)
        ys = torch.arange(h, dtype=raw.dtype, device=raw.device).view(1, 1, h, 1, 1).expand(1, 1, h, w, 1)
        xs = torch.arange(w, dtype=raw.dtype, device=raw.device).view(1, 1, 1, w, 1).expand(1, 1, h, w, 1)
        grid = torch.cat([xs, ys], -1)
        stride = torch.tensor(self.stride_xy, dtype=raw.dtype, device=raw.device)
        s = self.scale_x_y
        if self.decode == "new_coords":
            xy, wh, rest = p[..., 0:2] * s - 0.5 * (s - 1), p[..., 2:4] ** 2 * 4, p[..., 4:]
        elif self.decode == "yolov5":
            q = torch.sigmoid(p)
            xy, wh, rest = q[..., 0:2] * 2 - 0.5, (q[..., 2:4] * 2) ** 2, q[..., 4:]
        elif self.decode == "dfl":
            distances = dfl_distances(p[..., :4 * self.reg_max].reshape(n, count, h, w, 4, self.reg_max))
            xy, wh = 0.5 + (distances[..., 2:] - distances[..., :2]) / 2, distances[..., :2] + distances[..., 2:]
            scores = torch.sigmoid(p[..., 4 * self.reg_max:])
            rest = torch.cat([torch.ones_like(scores[..., :1]), scores], -1)
        elif self.decode == "region":
            xy, wh = torch.sigmoid(p[..., 0:2]), torch.exp(p[..., 2:4])
            rest = torch.cat([torch.sigmoid(p[..., 4:5]), torch.softmax(p[..., 5:], -1)], -1)
        else:
            xy, wh, rest = torch.sigmoid(p[..., 0:2]) * s - 0.5 * (s - 1), torch.exp(p[..., 2:4]), torch.sigmoid(
                p[..., 4:])
        boxes = torch.cat([(grid + xy) * stride, wh * self.anchors, rest], -1)
        return boxes.reshape(n, count * h * w, -1)


def read_darknet_floats(path):
    """A .weights file's floats after its header (12 bytes + 8-byte `seen` from version 0.2 on, else 4)."""
    data = np.fromfile(path, dtype=np.uint8)
    major, minor = np.frombuffer(data[:8].tobytes(), dtype="<i4")
    header = 20 if major * 10 + minor >= 2 else 16
    return np.frombuffer(data[header:].tobytes(), dtype="<f4")
