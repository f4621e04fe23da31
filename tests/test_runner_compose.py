"""Pooled mosaic images: reused buffers hold exactly what a freshly padded mosaic would, whatever the tiles
held before (other frame sizes, no frame, fewer streams in the group)."""

import numpy as np

from pruneyolo.detect.mosaic import Layout, blank_mosaic, paste
from pruneyolo.runner.compose import MosaicPool


def fresh(layout, frames):
    image = blank_mosaic(layout)
    placements = [None if f is None else paste(image, layout, i, f) for i, f in enumerate(frames)]
    return image, placements


def test_reused_mosaics_equal_fresh_ones():
    layout = Layout(2, 2, 96, 64)
    rng = np.random.default_rng(0)
    sizes = [(64, 48), (30, 60), (48, 32), (48, 32)]
    pool = MosaicPool(layout)
    seen = set()
    for step in range(40):
        count = int(rng.integers(1, 5))  # a group may have fewer streams than tiles
        frames = [None if rng.random() < 0.25 else
                  rng.integers(0, 256, sizes[int(rng.integers(0, 4))][::-1] + (3,), dtype=np.uint8)
                  for _ in range(count)]
        mosaic, placements = pool.compose(frames)
        expected, expected_placements = fresh(layout, frames)
        np.testing.assert_array_equal(mosaic.image, expected, err_msg=f"step {step}")
        assert placements == expected_placements
        seen.add(id(mosaic.image))
        if step % 3:  # some stay in flight a while, so several buffers circulate
            pool.release(mosaic)
    assert 1 < len(seen) <= 15  # reused: a new buffer only when none is free (14 are never given back)
