"""Mosaic geometry: the IR's input split into a grid of tiles, each source letterboxed into one (see
pruneyolo.detect.letterbox).

Everything here is pure: sizes in, placements and mapped boxes out.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pruneyolo.detect import letterbox
from pruneyolo.detect.letterbox import PAD_VALUE, Placement
from pruneyolo.errors import ArgumentError


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


def make_layout(spec: str | None, sources: int, width: int, height: int) -> Layout:
    """`--layout CxR` (or None: the smallest square grid that fits the sources and divides the input)."""
    if spec:
        try:
            cols, rows = (int(v) for v in spec.lower().split("x"))
        except ValueError:
            raise ArgumentError("layout", f"{spec!r} is not COLSxROWS, e.g. 2x2") from None
        if cols < 1 or rows < 1 or width % cols or height % rows:
            raise ArgumentError("layout", f"{spec} does not divide the {width}x{height} input into equal tiles")
        return Layout(cols, rows, width, height)
    side = max(1, math.ceil(math.sqrt(sources)))
    while side > 1 and (width % side or height % side):
        side -= 1
    return Layout(side, side, width, height)


def blank_mosaic(layout: Layout) -> np.ndarray:
    """An all-padding mosaic, u8 HxWx3."""
    return np.full((layout.height, layout.width, 3), PAD_VALUE, np.uint8)


def paste(mosaic: np.ndarray, layout: Layout, tile: int, frame: np.ndarray) -> Placement:
    """Letterbox `frame` into `tile` of `mosaic` in place; returns where it went within the tile."""
    x0, y0 = layout.origin(tile)
    return letterbox.paste(mosaic[y0:y0 + layout.tile_height, x0:x0 + layout.tile_width], frame)


def tile_of(centres_x: np.ndarray, centres_y: np.ndarray, layout: Layout) -> np.ndarray:
    """Tile index holding each (cx, cy) mosaic point; points outside the input clamp to the border tiles."""
    col = (centres_x // layout.tile_width).astype(np.int64)
    row = (centres_y // layout.tile_height).astype(np.int64)
    np.minimum(np.maximum(col, 0, out=col), layout.cols - 1, out=col)  # np.clip costs twice as much on few boxes
    np.minimum(np.maximum(row, 0, out=row), layout.rows - 1, out=row)
    return row * layout.cols + col


def to_source(boxes: np.ndarray, layout: Layout, tile: int, placement: Placement) -> np.ndarray:
    """Mosaic xyxy boxes of one tile -> the source frame's pixels, clipped to the tile's content."""
    return letterbox.to_source(boxes, placement, layout.origin(tile))


@functools.lru_cache(maxsize=256)
def tile_geometry(layout: Layout, placements: tuple[Placement | None, ...]) -> np.ndarray:
    """Per tile, float32 [left, top, right, bottom] of its content in mosaic pixels and [scale_x, scale_y]
    (a tile without a frame: no content, scale 1): `to_source`'s numbers, for every tile at once."""
    geometry = np.zeros((layout.tiles, 6), np.float32)
    geometry[:, 4:] = 1
    for tile, placement in enumerate(placements):
        if placement is not None:
            x0, y0 = layout.origin(tile)
            left, top = x0 + placement.pad_x, y0 + placement.pad_y
            geometry[tile] = left, top, left + placement.width, top + placement.height, placement.scale_x, \
                placement.scale_y
    geometry.flags.writeable = False  # shared by every caller of the cache
    return geometry


def to_sources(boxes: np.ndarray, tiles: np.ndarray, layout: Layout,
               placements: tuple[Placement | None, ...]) -> np.ndarray:
    """Mosaic xyxy boxes, box i in tile tiles[i] -> its frame's pixels, as `to_source` maps them tile by tile
    (same float32 arithmetic, so the same values); boxes in a tile without a placement come out all zeros."""
    geometry = tile_geometry(layout, placements)[tiles]
    low, high, scale = geometry[:, None, 0:2], geometry[:, None, 2:4], geometry[:, None, 4:6]
    mapped = (np.clip(boxes.reshape(-1, 2, 2), low, high) - low) / scale
    return mapped.reshape(-1, 4).astype(np.float32, copy=False)


def to_mosaic(boxes: np.ndarray, layout: Layout, tile: int, placement: Placement) -> np.ndarray:
    """Source-pixel xyxy boxes -> mosaic pixels (the inverse of `to_source`, for drawing and tests)."""
    return letterbox.to_target(boxes, placement, layout.origin(tile))
