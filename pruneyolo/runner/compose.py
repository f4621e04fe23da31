"""Mosaic images reused from job to job: a frame is letterboxed over what its tile held, and a tile's padding
is refilled only when what it holds changes, so a steady run neither allocates nor fills whole mosaics.

Each buffer is handed to inference without a copy (as `tensor`, made once per buffer by the pool's `wrap`, e.g.
an OpenVINO tensor over it), so it goes back to the pool only once its job is finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pruneyolo.detect.letterbox import PAD_VALUE, Placement, place
from pruneyolo.detect.mosaic import Layout, blank_mosaic, paste


@dataclass
class Mosaic:
    """A mosaic image, what each tile holds (its frame's placement; None for padding only) and the image as
    handed to inference."""

    image: np.ndarray
    holds: list[Placement | None]
    tensor: object


class MosaicPool:
    """Mosaic images for one layout, taken by `compose` and given back by `release`."""

    def __init__(self, layout: Layout, wrap: Callable[[np.ndarray], object] = lambda image: image):
        self.layout, self.wrap = layout, wrap
        self.free: list[Mosaic] = []

    def _new(self) -> Mosaic:
        image = blank_mosaic(self.layout)
        return Mosaic(image, [None] * self.layout.tiles, self.wrap(image))

    def compose(self, frames: list[np.ndarray | None]) -> tuple[Mosaic, list[Placement | None]]:
        """A mosaic holding `frames` letterboxed tile by tile (None or absent: an all-padding tile), and where
        each went."""
        layout = self.layout
        mosaic = self.free.pop() if self.free else self._new()
        placements = []
        for index, frame in enumerate([*frames, *[None] * (layout.tiles - len(frames))]):
            wanted = None if frame is None else place(frame.shape[1], frame.shape[0], layout.tile_width,
                                                      layout.tile_height)
            if mosaic.holds[index] != wanted:
                x0, y0 = layout.origin(index)
                mosaic.image[y0:y0 + layout.tile_height, x0:x0 + layout.tile_width] = PAD_VALUE
            placements.append(None if frame is None else paste(mosaic.image, layout, index, frame))
            mosaic.holds[index] = wanted
        return mosaic, placements[:len(frames)]

    def release(self, mosaic: Mosaic) -> None:
        """Give a mosaic back once nothing reads it any more."""
        self.free.append(mosaic)
