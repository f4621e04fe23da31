"""Mosaic geometry: the IR's input split into a grid of tiles, each source letterboxed into one.

Everything here is pure: sizes in, placements and mapped boxes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pruneyolo.errors import PruneyoloError

PAD_VALUE = 114


@dataclass(frozen=True)
class Layout:
    """A cols x rows grid of equal tiles covering a width x height input."""

    cols: int
    rows: int
    width: int
    height: int

    @property
    def tiles(self) -> int:
        return self.cols * self.rows

    @property
    def tile_width(self) -> int:
        return self.width // self.cols

    @property
    def tile_height(self) -> int:
        return self.height // self.rows

    def origin(self, tile: int) -> tuple[int, int]:
        """Top-left (x, y) of a tile in the mosaic; tiles are numbered row by row."""
        return (tile % self.cols) * self.tile_width, (tile // self.cols) * self.tile_height


@dataclass(frozen=True)
class Placement:
    """Where a source frame lands inside its tile: resized to width x height, offset by the padding."""

    pad_x: int
    pad_y: int
    width: int  # resized content size in tile pixels
    height: int
    source_width: int
    source_height: int

    @property
    def scale_x(self) -> float:
        return self.width / self.source_width

    @property
    def scale_y(self) -> float:
        return self.height / self.source_height


def make_layout(spec: str | None, sources: int, width: int, height: int) -> Layout:
    """`--layout CxR` (or None: the smallest square grid that fits the sources and divides the input)."""
    if spec:
        try:
            cols, rows = (int(v) for v in spec.lower().split("x"))
        except ValueError:
            raise PruneyoloError(f"--layout {spec!r} is not COLSxROWS, e.g. 2x2") from None
        if cols < 1 or rows < 1 or width % cols or height % rows:
            raise PruneyoloError(f"--layout {spec} does not divide the {width}x{height} input into equal tiles")
        return Layout(cols, rows, width, height)
    side = max(1, math.ceil(math.sqrt(sources)))
    while side > 1 and (width % side or height % side):
        side -= 1
    return Layout(side, side, width, height)


def place(source_width: int, source_height: int, tile_width: int, tile_height: int) -> Placement:
    """Letterbox: the largest aspect-preserving fit, centred (padding split evenly, extra pixel right/bottom)."""
    scale = min(tile_width / source_width, tile_height / source_height)
    width = min(tile_width, max(1, round(source_width * scale)))
    height = min(tile_height, max(1, round(source_height * scale)))
    return Placement((tile_width - width) // 2, (tile_height - height) // 2, width, height,
                     source_width, source_height)


def blank_mosaic(layout: Layout) -> np.ndarray:
    """An all-padding mosaic, u8 HxWx3."""
    return np.full((layout.height, layout.width, 3), PAD_VALUE, np.uint8)


def paste(mosaic: np.ndarray, layout: Layout, tile: int, frame: np.ndarray) -> Placement:
    """Letterbox `frame` into `tile` of `mosaic` in place; returns where it went."""
    source_height, source_width = frame.shape[:2]
    placement = place(source_width, source_height, layout.tile_width, layout.tile_height)
    x0, y0 = layout.origin(tile)
    x, y = x0 + placement.pad_x, y0 + placement.pad_y
    target = mosaic[y:y + placement.height, x:x + placement.width]
    if (placement.width, placement.height) == (source_width, source_height):
        target[...] = frame
    else:
        cv2.resize(frame, (placement.width, placement.height), dst=target, interpolation=cv2.INTER_LINEAR)
    return placement


def tile_of(centres_x: np.ndarray, centres_y: np.ndarray, layout: Layout) -> np.ndarray:
    """Tile index holding each (cx, cy) mosaic point; points outside the input clamp to the border tiles."""
    col = np.clip((centres_x // layout.tile_width).astype(np.int64), 0, layout.cols - 1)
    row = np.clip((centres_y // layout.tile_height).astype(np.int64), 0, layout.rows - 1)
    return row * layout.cols + col


def to_source(boxes: np.ndarray, layout: Layout, tile: int, placement: Placement) -> np.ndarray:
    """Mosaic xyxy boxes of one tile -> the source frame's pixels, clipped to the tile's content."""
    x0, y0 = layout.origin(tile)
    left, top = x0 + placement.pad_x, y0 + placement.pad_y
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, 0::2] = (np.clip(boxes[:, 0::2], left, left + placement.width) - left) / placement.scale_x
    out[:, 1::2] = (np.clip(boxes[:, 1::2], top, top + placement.height) - top) / placement.scale_y
    return out


def to_mosaic(boxes: np.ndarray, layout: Layout, tile: int, placement: Placement) -> np.ndarray:
    """Source-pixel xyxy boxes -> mosaic pixels (the inverse of `to_source`, for drawing and tests)."""
    x0, y0 = layout.origin(tile)
    out = np.array(boxes, np.float32)
    out[:, 0::2] = out[:, 0::2] * placement.scale_x + x0 + placement.pad_x
    out[:, 1::2] = out[:, 1::2] * placement.scale_y + y0 + placement.pad_y
    return out
