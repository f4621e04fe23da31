"""Test IRs whose detections are known by construction, for the runner tests and tools/bench_run.

The model pools its u8 BGR input over stride x stride cells. A cell whose brightest channel averages above
THRESHOLD "detects" one box centred on the cell, of size `anchor`, class 0 if blue dominates, 1 if red.
It exists as `decoded` (one [1, N, 7] output) and as `raw` (one darknet head [1, 7, h, w]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pruneyolo.detect.metadata import HeadInfo, ModelInfo

THRESHOLD = 200.0
LABELS = ["blue", "red"]


def _const(array) -> ov.Node:
    return ops.constant(np.asarray(array, np.float32))


def _work(x: ov.Node, layers: int, channels: int = 32) -> ov.Node:
    """`layers` 3x3 convs (real compute for benchmarks), pooled to one channel and scaled to ~0."""
    rng = np.random.default_rng(0)
    y, width = x, 3
    for _ in range(layers):
        weights = rng.normal(0, 0.05, (channels, width, 3, 3))
        y = ops.relu(ops.convolution(y, _const(weights), [1, 1], [1, 1], [1, 1], [1, 1]))
        width = channels
    y = ops.reduce_mean(y, ops.constant(np.array([1], np.int64)), True)
    return ops.multiply(y, _const(1e-9))


def make_ir(path: Path, width: int = 128, height: int = 128, stride: int = 16, anchor: tuple = (24, 24),
            heads_mode: str = "decoded", work_layers: int = 0, input_type: ov.Type = ov.Type.u8) -> Path:
    """Write the IR (with metadata) to `path` (.xml) and return it (`input_type`: u8, as convert writes, or
    another type for a model a u8 client cannot feed)."""
    image = ops.parameter([1, height, width, 3], input_type, name="image")
    x = ops.transpose(ops.convert(image, ov.Type.f32), ops.constant(np.array([0, 3, 1, 2], np.int64)))
    if work_layers:
        extra = _work(x, work_layers)
        x = ops.add(x, extra)
    pooled = ops.avg_pool(x, [stride, stride], [0, 0], [0, 0], [stride, stride], True)  # [1, 3, h, w]
    blue, _, red = ops.split(pooled, ops.constant(np.int64(1)), 3).outputs()
    brightest = ops.reduce_max(pooled, ops.constant(np.array([1], np.int64)), True)
    objectness = ops.multiply(ops.subtract(brightest, _const(THRESHOLD)), _const(0.5))
    class_blue = ops.multiply(ops.subtract(blue, red), _const(0.1))
    class_red = ops.multiply(ops.subtract(red, blue), _const(0.1))
    grid_h, grid_w = height // stride, width // stride
    zeros = ops.multiply(brightest, _const(0.0))
    if heads_mode == "raw":
        output = ops.concat([zeros, zeros, zeros, zeros, objectness, class_blue, class_red], 1)
    else:
        ys, xs = np.mgrid[0:grid_h, 0:grid_w].astype(np.float32)
        cx = ops.add(zeros, _const(((xs + 0.5) * stride)[None, None]))
        cy = ops.add(zeros, _const(((ys + 0.5) * stride)[None, None]))
        w = ops.add(zeros, _const(anchor[0]))
        h = ops.add(zeros, _const(anchor[1]))
        scores = [ops.sigmoid(t) for t in (objectness, class_blue, class_red)]
        rows = ops.concat([cx, cy, w, h, *scores], 1)  # [1, 7, h, w]
        output = ops.transpose(ops.reshape(rows, ops.constant(np.array([1, 7, -1], np.int64)), False),
                               ops.constant(np.array([0, 2, 1], np.int64)))
    model = ov.Model([ops.result(output)], [image], "bright_cells")
    head = HeadInfo(stride, [list(map(float, anchor))], "darknet", 1.0, [grid_h, grid_w])
    ModelInfo(list(LABELS), width, height, [head], heads_mode, cfg_name="bright_cells").write(model)
    ov.save_model(model, str(path))
    return Path(path)


def cell_centre_scene(width: int, height: int, centre: tuple[float, float], side: float,
                      colour=(255, 0, 0)) -> np.ndarray:
    """A dark frame with one filled square of `side` px centred at `centre` (source pixels)."""
    frame = np.full((height, width, 3), 30, np.uint8)
    x, y = centre
    half = side / 2
    frame[round(y - half):round(y + half), round(x - half):round(x + half)] = colour
    return frame
