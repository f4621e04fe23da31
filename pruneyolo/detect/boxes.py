"""Detections from decoded rows: confidence filter, then NMS within each (tile, class) group, vectorised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CANDIDATES = 4096
NMS_MATRIX_MAX = 512  # up to this many boxes NMS computes all IoUs at once (2 MB of booleans and floats)


@dataclass(frozen=True)
class Detections:
    """Parallel arrays: xyxy boxes [N, 4] float32, scores [N] float32, classes [N] int64."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.classes[index])


def confident_rows(rows: np.ndarray, conf: float) -> np.ndarray:
    """The [N, 5+C] rows whose objectness reaches conf, copied: the only rows `candidates` can keep."""
    rows = rows.reshape(-1, rows.shape[-1])
    return rows.take(np.flatnonzero(rows[:, 4] >= conf), 0)  # 7x faster than a boolean row mask


def candidates(rows: np.ndarray, conf: float) -> Detections:
    """[N, 5+C] rows (cx, cy, w, h, obj, class probs) -> best-class boxes scoring >= conf, xyxy."""
    rows = confident_rows(rows, conf)
    class_scores = rows[:, 5:] * rows[:, 4:5]
    classes = class_scores.argmax(1) if len(rows) else np.zeros(0, np.int64)
    scores = class_scores[np.arange(len(rows)), classes]
    keep = np.flatnonzero(scores >= conf)
    if len(keep) > MAX_CANDIDATES:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:MAX_CANDIDATES]]
    centre, half = rows[keep, 0:2], rows[keep, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], 1).astype(np.float32)
    return Detections(boxes, scores[keep].astype(np.float32), classes[keep].astype(np.int64))


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes [N, 4] x [M, 4] (coordinate by coordinate: 2-D arrays, no strided 3-D ones)."""
    x1, y1, x2, y2 = (first[:, i, None] for i in range(4))
    u1, v1, u2, v2 = (second[None, :, i] for i in range(4))
    inter = np.maximum(np.minimum(x2, u2) - np.maximum(x1, u1), 0) * \
        np.maximum(np.minimum(y2, v2) - np.maximum(y1, v1), 0)
    areas_first = (x2 - x1) * (y2 - y1)
    areas_second = (u2 - u1) * (v2 - v1)
    return inter / np.maximum(areas_first + areas_second - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy NMS that only suppresses within a group; returns kept indices, best score first (the first `limit`:
    greedy NMS decides each box from better ones only, so stopping there changes none of them).

    Groups are separated by shifting each one's boxes into its own far-apart square, so one pass serves all.
    """
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    span = float(np.abs(boxes).max()) * 2 + 1
    shifted = boxes + (groups.astype(np.float64) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    if len(order) <= NMS_MATRIX_MAX:  # one IoU matrix, then a scan of booleans: the common, small case
        overlaps = box_iou(shifted[order], shifted[order]) > iou
        alive = np.ones(len(order), bool)
        keep = []
        rank = 0
        while len(keep) != limit:  # visits kept boxes only: the next alive rank is one argmax away
            keep.append(order[rank])
            alive &= ~overlaps[rank]
            alive[rank] = False
            rank = int(alive.argmax())
            if not alive[rank]:
                break
        return np.asarray(keep, np.int64)
    keep = []
    while len(order) and len(keep) != limit:
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[box_iou(shifted[best][None], shifted[order])[0] <= iou]
    return np.asarray(keep, np.int64)


def select(rows: np.ndarray, tiles_of, conf: float, iou: float) -> tuple[Detections, np.ndarray]:
    """Rows of one mosaic -> detections kept after per-(tile, class) NMS, and each one's tile.

    `tiles_of(boxes)` maps xyxy mosaic boxes to tile indices (by centre).
    """
    found = candidates(rows, conf)
    tiles = tiles_of(found.boxes)
    groups = tiles * (int(found.classes.max(initial=0)) + 1) + found.classes
    keep = nms(found.boxes, found.scores, groups, iou)
    return found.take(keep), tiles[keep]
