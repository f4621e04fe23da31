"""Plain numpy decoding of raw YOLO head tensors: the reference the in-graph decode is tested against.

Rows come out head by head, then anchor, row (y), column (x); each is (cx, cy, w, h) in input pixels,
objectness, then per-class scores.
"""

from __future__ import annotations

import numpy as np

from pruneyolo.detect.metadata import HeadInfo, ModelInfo


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_head(raw: np.ndarray, head: HeadInfo, input_width: int, input_height: int) -> np.ndarray:
    """One head [1, A*(5+C), h, w] (a 'dfl' head: [1, 4 x reg_max + C, h, w]) -> [A*h*w, 5+C]."""
    anchors = np.asarray(head.anchors, np.float32)
    count = len(anchors)
    _, channels, height, width = raw.shape
    p = raw.reshape(count, channels // count, height, width).transpose(0, 2, 3, 1).astype(np.float64)
    grid_y, grid_x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    stride_x, stride_y = input_width / width, input_height / height
    anchor_w = anchors[:, 0, None, None]
    anchor_h = anchors[:, 1, None, None]
    columns = channels - 4 * head.reg_max + 5 if head.decode == "dfl" else channels // count
    out = np.empty((*p.shape[:-1], columns))
    scale = head.scale_x_y
    if head.decode == "new_coords":
        xy, wh = p[..., 0:2] * scale - 0.5 * (scale - 1), (p[..., 2:4] ** 2) * 4
        out[..., 4:] = p[..., 4:]
    elif head.decode == "yolov5":
        s = _sigmoid(p)
        xy, wh = s[..., 0:2] * 2 - 0.5, (s[..., 2:4] * 2) ** 2
        out[..., 4:] = s[..., 4:]
    elif head.decode == "dfl":
        xy, wh = _distribution_focal(p[..., :4 * head.reg_max], head.reg_max)
        out[..., 4] = 1.0
        out[..., 5:] = _sigmoid(p[..., 4 * head.reg_max:])
    elif head.decode == "region":
        xy, wh = _sigmoid(p[..., 0:2]), np.exp(p[..., 2:4])
        out[..., 4] = _sigmoid(p[..., 4])
        logits = p[..., 5:] - p[..., 5:].max(-1, keepdims=True)
        out[..., 5:] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    else:
        xy, wh = _sigmoid(p[..., 0:2]) * scale - 0.5 * (scale - 1), np.exp(p[..., 2:4])
        out[..., 4:] = _sigmoid(p[..., 4:])
    out[..., 0] = (grid_x + xy[..., 0]) * stride_x
    out[..., 1] = (grid_y + xy[..., 1]) * stride_y
    out[..., 2] = wh[..., 0] * anchor_w
    out[..., 3] = wh[..., 1] * anchor_h
    return out.reshape(-1, columns).astype(np.float32)


def _distribution_focal(bins: np.ndarray, reg_max: int) -> tuple[np.ndarray, np.ndarray]:
    """DFL bins [..., 4 x reg_max] -> (centre offset in the cell, size) in grid cells: each side's distance
    is the expectation of its softmax over 0..reg_max-1, sides in the order left, top, right, bottom."""
    bins = bins.reshape(*bins.shape[:-1], 4, reg_max)
    weights = np.exp(bins - bins.max(-1, keepdims=True))
    distances = (weights * np.arange(reg_max)).sum(-1) / weights.sum(-1)
    near, far = distances[..., :2], distances[..., 2:]
    return 0.5 + (far - near) / 2, near + far


def decode_raw(raws: list[np.ndarray], info: ModelInfo) -> np.ndarray:
    """All heads of a raw-heads model -> [N, 5+C]."""
    return np.concatenate([decode_head(raw, head, info.input_width, info.input_height)
                           for raw, head in zip(raws, info.heads, strict=True)])


def rows_from_scores(scores: np.ndarray) -> np.ndarray:
    """A scores-mode output [1, 4+C, N] -> rows [N, 5+C] with objectness 1 (the class scores hold it already)."""
    boxes_scores = scores.reshape(scores.shape[-2], -1).T
    return np.concatenate([boxes_scores[:, :4], np.ones((len(boxes_scores), 1), np.float32), boxes_scores[:, 4:]], 1)


def rows_of(outputs: list[np.ndarray], info: ModelInfo) -> np.ndarray:
    """An IR's outputs -> decoded rows [N, 5+C], per the heads_mode in its metadata."""
    if info.heads_mode == "raw":
        return decode_raw(outputs, info)
    if info.heads_mode == "scores":
        return rows_from_scores(outputs[0])
    return outputs[0].reshape(-1, outputs[0].shape[-1])
