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


def test_keyed_frames_are_resized_once_then_copied_and_equal_fresh_mosaics():
    layout = Layout(2, 2, 96, 64)
    rng = np.random.default_rng(1)
    cycle = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(3)]  # resized to 43x32 in a 48x32 tile
    pool = MosaicPool(layout)
    for step in range(9):
        frames = [cycle[step % 3], None, cycle[(step + 1) % 3]]
        keys = [("a", step % 3), None, ("b", (step + 1) % 3)]
        mosaic, placements = pool.compose(frames, keys)
        expected, expected_placements = fresh(layout, frames)
        np.testing.assert_array_equal(mosaic.image, expected, err_msg=f"step {step}")
        assert placements == expected_placements
        pool.release(mosaic)
    assert len(pool.kept) == 6 and all(kept.shape == (32, 43, 3) for kept in pool.kept.values())
    mosaic, _ = pool.compose([np.zeros((60, 80, 3), np.uint8)], [("a", 0)])  # a key stands for its pixels
    np.testing.assert_array_equal(mosaic.image, fresh(layout, [cycle[0]])[0])


def test_kept_tiles_stop_at_their_room_and_unresized_frames_are_not_kept():
    layout = Layout(2, 1, 96, 36)
    pool = MosaicPool(layout, kept_bytes=2 * 36 * 48 * 3)
    frames = [np.full((60, 80, 3), value, np.uint8) for value in range(4)]
    for step, frame in enumerate(frames):
        pool.release(pool.compose([frame, np.full((36, 48, 3), 7, np.uint8)], [step, ("same size", step)])[0])
    assert sorted(pool.kept) == [0, 1] and pool.kept_room == 0
    mosaic, _ = pool.compose([frames[3]], [3])
    np.testing.assert_array_equal(mosaic.image, fresh(layout, [frames[3]])[0])
