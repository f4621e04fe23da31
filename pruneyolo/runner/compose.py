"""Mosaic images reused from job to job: a frame is letterboxed over what its tile held, and a tile's padding
is refilled only when what it holds changes, so a steady run neither allocates nor fills whole mosaics.

Each buffer is handed to inference without a copy (as `tensor`, made once per buffer by the pool's `wrap`, e.g.
an OpenVINO tensor over it), so it goes back to the pool only once its job is finished.

A frame given with a key (frames with equal keys have equal pixels: a replayed frame's place in its cycle) has
its resized content kept, up to KEPT_TILE_BYTES in all, and copied in when that key comes again instead of
being resized anew.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from pruneyolo.detect.letterbox import PAD_VALUE, Placement, place
from pruneyolo.detect.mosaic import Layout, blank_mosaic, paste

KEPT_TILE_BYTES = 64 << 20  # 4 replayed 640x480 streams of 30 frames in 416x312 tiles keep 47 MB


@dataclass
class Mosaic:
    """A mosaic image, what each tile holds (its frame's placement; None for padding only) and the image as
    handed to inference."""

    image: np.ndarray
    holds: list[Placement | None]
    tensor: object


def content(image: np.ndarray, layout: Layout, tile: int, placement: Placement) -> np.ndarray:
    """The view of `image` a frame's resized pixels occupy in `tile`."""
    x0, y0 = layout.origin(tile)
    top, left = y0 + placement.pad_y, x0 + placement.pad_x
    return image[top:top + placement.height, left:left + placement.width]


class MosaicPool:
    """Mosaic images for one layout, taken by `compose` and given back by `release`."""

    def __init__(self, layout: Layout, wrap: Callable[[np.ndarray], object] = lambda image: image,
                 kept_bytes: int = KEPT_TILE_BYTES):
        self.layout, self.wrap = layout, wrap
        self.free: list[Mosaic] = []
        self.kept: dict[Hashable, np.ndarray] = {}  # key -> the frame's resized content
        self.kept_room = kept_bytes

    def _new(self) -> Mosaic:
        image = blank_mosaic(self.layout)
        return Mosaic(image, [None] * self.layout.tiles, self.wrap(image))

    def compose(self, frames: list[np.ndarray | None],
                keys: list[Hashable | None] = ()) -> tuple[Mosaic, list[Placement | None]]:
        """A mosaic holding `frames` letterboxed tile by tile (None or absent: an all-padding tile), and where
        each went; `keys[i]` (None or absent: none) names frame i's pixels for the kept tiles."""
        layout = self.layout
        mosaic = self.free.pop() if self.free else self._new()
        placements = []
        keys = [*keys, *[None] * (layout.tiles - len(keys))]
        for index, frame in enumerate([*frames, *[None] * (layout.tiles - len(frames))]):
            wanted = None if frame is None else place(frame.shape[1], frame.shape[0], layout.tile_width,
                                                      layout.tile_height)
            if mosaic.holds[index] != wanted:
                x0, y0 = layout.origin(index)
                mosaic.image[y0:y0 + layout.tile_height, x0:x0 + layout.tile_width] = PAD_VALUE
            mosaic.holds[index] = wanted
            if frame is None:
                placements.append(None)
            elif (kept := self.kept.get(keys[index])) is not None and kept.shape[:2] == (wanted.height, wanted.width):
                content(mosaic.image, layout, index, wanted)[...] = kept
                placements.append(wanted)
            else:
                placements.append(paste(mosaic.image, layout, index, frame))
                self._keep(keys[index], content(mosaic.image, layout, index, wanted), frame.shape)
        return mosaic, placements[:len(frames)]

    def _keep(self, key: Hashable | None, pixels: np.ndarray, frame_shape: tuple[int, ...]) -> None:
        """Keep a copy of a keyed frame's resized pixels while there is room (a frame pasted unresized: no need)."""
        if key is None or key in self.kept or pixels.shape == frame_shape or pixels.nbytes > self.kept_room:
            return
        self.kept[key] = pixels.copy()
        self.kept_room -= pixels.nbytes

    def release(self, mosaic: Mosaic) -> None:
        """Give a mosaic back once nothing reads it any more."""
        self.free.append(mosaic)
