"""Letterboxing: an image fitted into a model input without distortion, and boxes mapped back to the image.

One geometry serves `pruneyolo run` (each mosaic tile), `pruneyolo eval` and INT8 calibration, so accuracy is
measured, and calibration done, on the pixels the deployed model sees.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Placement:
    """Where a source image lands in its target: resized to width x height, offset by the padding."""

    pad_x: int
    pad_y: int
    width: int  # resized content size in target pixels
    height: int
    source_width: int
    source_height: int

    @property
    def scale_x(self) -> float:
        return self.width / self.source_width

    @property
    def scale_y(self) -> float:
        return self.height / self.source_height


@functools.lru_cache(maxsize=256)  # a stream's frames keep their size
def place(source_width: int, source_height: int, width: int, height: int) -> Placement:
    """The largest aspect-preserving fit into width x height, centred (padding split evenly, extra pixel
    right/bottom)."""
    scale = min(width / source_width, height / source_height)
    content_width = min(width, max(1, round(source_width * scale)))
    content_height = min(height, max(1, round(source_height * scale)))
    return Placement((width - content_width) // 2, (height - content_height) // 2, content_width, content_height,
                     source_width, source_height)


def paste(target: np.ndarray, image: np.ndarray) -> Placement:
    """Letterbox `image` into `target` (an H x W x 3 array or view) in place; the padding is left as it is."""
    source_height, source_width = image.shape[:2]
    placement = place(source_width, source_height, target.shape[1], target.shape[0])
    content = target[placement.pad_y:placement.pad_y + placement.height,
                     placement.pad_x:placement.pad_x + placement.width]
    if (placement.width, placement.height) == (source_width, source_height):
        content[...] = image
    else:
        cv2.resize(image, (placement.width, placement.height), dst=content, interpolation=cv2.INTER_LINEAR)
    return placement


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Placement]:
    """`image` letterboxed into a new u8 height x width x 3 input padded with PAD_VALUE, and where it went."""
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    return canvas, paste(canvas, image)


def to_source(boxes: np.ndarray, placement: Placement, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """xyxy boxes in target pixels (the target's top-left at `origin`) -> source pixels, clipped to the
    source image."""
    left, top = origin[0] + placement.pad_x, origin[1] + placement.pad_y
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, 0::2] = (np.clip(boxes[:, 0::2], left, left + placement.width) - left) / placement.scale_x
    out[:, 1::2] = (np.clip(boxes[:, 1::2], top, top + placement.height) - top) / placement.scale_y
    return out


def to_target(boxes: np.ndarray, placement: Placement, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Source-pixel xyxy boxes -> target pixels (the inverse of `to_source`, for drawing and tests)."""
    out = np.array(boxes, np.float32)
    out[:, 0::2] = out[:, 0::2] * placement.scale_x + origin[0] + placement.pad_x
    out[:, 1::2] = out[:, 1::2] * placement.scale_y + origin[1] + placement.pad_y
    return out


def rows_to_source(rows: np.ndarray, placement: Placement) -> np.ndarray:
    """Decoded rows [N, 5+C] (cx, cy, w, h in input pixels, then scores) -> source pixels, boxes clipped as
    `to_source` clips them."""
    rows = np.array(rows, np.float32, copy=True)
    centre, half = rows[:, 0:2], rows[:, 2:4] / 2
    boxes = to_source(np.concatenate([centre - half, centre + half], 1), placement)
    rows[:, 0:2] = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    rows[:, 2:4] = boxes[:, 2:4] - boxes[:, 0:2]
    return rows
