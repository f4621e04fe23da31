"""Pure geometry and post-processing of the mosaic runner: layouts, letterbox placement, box mapping, NMS."""

import numpy as np
import pytest

from pruneyolo.detect.boxes import Detections, box_iou, candidates, nms, select
from pruneyolo.detect.letterbox import place
from pruneyolo.detect.mosaic import (
    Layout,
    blank_mosaic,
    make_layout,
    paste,
    tile_of,
    to_mosaic,
    to_source,
    to_sources,
)
from pruneyolo.errors import PruneyoloError


def test_layout_default_fits_sources_and_divides_input():
    assert make_layout(None, 4, 832, 832) == Layout(2, 2, 832, 832)
    assert make_layout(None, 1, 416, 416) == Layout(1, 1, 416, 416)
    assert make_layout(None, 9, 832, 832).tiles == 4  # 3 does not divide 832: 2x2, several mosaics a round
    assert make_layout("1x2", 2, 416, 832).tile_height == 416


def test_layout_that_does_not_divide_is_one_line_error():
    with pytest.raises(PruneyoloError, match="does not divide"):
        make_layout("3x3", 9, 832, 832)
    with pytest.raises(PruneyoloError, match="COLSxROWS"):
        make_layout("two", 2, 832, 832)


@pytest.mark.parametrize("source, expected", [
    ((640, 360), (416, 234, 0, 91)),  # landscape: bars top and bottom
    ((360, 640), (234, 416, 91, 0)),  # portrait: bars left and right
    ((416, 416), (416, 416, 0, 0)),
    ((100, 50), (416, 208, 0, 104)),  # upscaled
])
def test_place_letterboxes_non_square_sources(source, expected):
    p = place(*source, 416, 416)
    assert (p.width, p.height, p.pad_x, p.pad_y) == expected


def test_paste_puts_content_in_its_tile_and_padding_around():
    layout = Layout(2, 2, 64, 64)
    mosaic = blank_mosaic(layout)
    frame = np.full((16, 32, 3), 255, np.uint8)  # 2:1 -> 32x16 in a 32x32 tile, pad_y 8
    p = paste(mosaic, layout, 3, frame)
    assert (p.pad_x, p.pad_y, p.width, p.height) == (0, 8, 32, 16)
    assert (mosaic[32 + 8:32 + 24, 32:64] == 255).all()
    assert (mosaic[32:40, 32:64] == 114).all() and (mosaic[:32] == 114).all()


@pytest.mark.parametrize("size", [(640, 360), (360, 640), (1280, 720), (50, 300)])
@pytest.mark.parametrize("tile", [0, 1, 2, 3])
def test_source_to_mosaic_and_back_is_identity(size, tile):
    layout = Layout(2, 2, 832, 832)
    p = place(*size, layout.tile_width, layout.tile_height)
    w, h = size
    boxes = np.array([[0, 0, w, h], [w * 0.1, h * 0.2, w * 0.5, h * 0.9]], np.float32)
    mosaic = to_mosaic(boxes, layout, tile, p)
    assert (tile_of((mosaic[:, 0] + mosaic[:, 2]) / 2, (mosaic[:, 1] + mosaic[:, 3]) / 2, layout) == tile).all()
    np.testing.assert_allclose(to_source(mosaic, layout, tile, p), boxes, atol=1e-3)


def test_to_source_clips_to_the_tile_content():
    layout = Layout(2, 1, 200, 100)
    p = place(200, 100, 100, 100)  # content 100x50 at pad_y 25 in tile 1 (x from 100)
    boxes = np.array([[90, 10, 150, 60]], np.float32)  # sticks out left into tile 0 and above the content
    np.testing.assert_allclose(to_source(boxes, layout, 1, p), [[0, 0, 100, 70]], atol=1e-4)


def scattered_boxes(count, seed=0):
    """xyxy boxes all over (and a little outside) an 832x832 mosaic, some straddling tiles, and their tiles."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(-30, 860, (count, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0, 200, (count, 2))], 1).astype(np.float32)
    return boxes, rng.integers(0, 4, count)


def test_to_sources_is_to_source_tile_by_tile_bit_for_bit():
    layout = Layout(2, 2, 832, 832)
    placements = (place(640, 480, 416, 416), place(333, 517, 416, 416), None, place(1280, 720, 416, 416))
    boxes, tiles = scattered_boxes(400)
    mapped = to_sources(boxes, tiles, layout, placements)
    assert mapped.dtype == np.float32
    for tile, placement in enumerate(placements):
        mine = tiles == tile
        expected = np.zeros((mine.sum(), 4), np.float32) if placement is None else \
            to_source(boxes[mine], layout, tile, placement)
        np.testing.assert_array_equal(mapped[mine], expected)


def test_per_frame_splits_by_tile_in_score_order_without_empty_boxes():
    from pruneyolo.runner.pipeline import per_frame

    layout = Layout(2, 2, 832, 832)
    placements = (place(640, 480, 416, 416), None, place(300, 600, 416, 416))  # a group of 3, one frameless
    boxes, tiles = scattered_boxes(300, seed=1)
    scores = np.linspace(1, 0.3, len(boxes), dtype=np.float32)  # already best first, as NMS returns them
    found = per_frame(Detections(boxes, scores, np.arange(len(boxes))), tiles, layout, placements)
    assert len(found) == layout.tiles
    for tile, detections in enumerate(found):
        mine = np.flatnonzero(tiles == tile)
        if tile >= len(placements) or placements[tile] is None:
            assert len(detections) == 0
            continue
        mapped = to_source(boxes[mine], layout, tile, placements[tile])
        area = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
        assert 0 < area.sum() < len(mine)  # some boxes lay wholly in the padding or beyond the tile
        np.testing.assert_array_equal(detections.boxes, mapped[area])
        np.testing.assert_array_equal(detections.classes, mine[area])
        assert (np.diff(detections.scores) <= 0).all()


def test_tile_of_assigns_centres_row_by_row():
    layout = Layout(3, 2, 300, 200)
    xs = np.array([0, 150, 299, 10, 250, 400])
    ys = np.array([0, 50, 99, 150, 199, -5])
    assert tile_of(xs, ys, layout).tolist() == [0, 1, 2, 3, 5, 2]


def rows(*boxes_obj_cls):
    """(cx, cy, w, h, obj, p0, p1) rows."""
    return np.array(boxes_obj_cls, np.float32)


def test_candidates_score_is_objectness_times_class_probability():
    found = candidates(rows([10, 10, 4, 4, 0.9, 0.2, 0.8], [10, 10, 4, 4, 0.3, 1.0, 0.0]), conf=0.25)
    assert found.classes.tolist() == [1, 0]
    np.testing.assert_allclose(found.scores, [0.72, 0.3], rtol=1e-6)
    np.testing.assert_allclose(found.boxes[0], [8, 8, 12, 12])
    assert len(candidates(rows([10, 10, 4, 4, 0.9, 0.2, 0.2]), conf=0.25)) == 0


def test_nms_is_per_group():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, np.array([0, 0, 1, 0]), 0.45).tolist() == [0, 2, 3]
    assert nms(boxes, scores, np.zeros(4, int), 0.9).tolist() == [0, 1, 3]  # 2 duplicates 1


def test_select_never_suppresses_across_tiles_or_classes():
    layout = Layout(2, 1, 64, 32)
    found, tiles = select(rows(
        [30, 16, 8, 8, 0.9, 1, 0],  # tile 0
        [34, 16, 8, 8, 0.8, 1, 0],  # overlaps the first but its centre is in tile 1: kept
        [29, 16, 8, 8, 0.7, 1, 0],  # same tile and class as the first: suppressed
        [30, 16, 8, 8, 0.6, 0, 1],  # same place, other class: kept
    ), lambda b: tile_of((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, layout), conf=0.25, iou=0.45)
    np.testing.assert_allclose(found.scores, [0.9, 0.8, 0.6], rtol=1e-6)
    assert tiles.tolist() == [0, 1, 0] and found.classes.tolist() == [0, 0, 1]


@pytest.mark.parametrize("count", [40, 700])  # the IoU-matrix path and the one-box-at-a-time path
def test_nms_keeps_what_greedy_nms_keeps(count):
    rng = np.random.default_rng(count)
    corners = rng.uniform(0, 200, (count, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, (count, 2))], 1).astype(np.float32)
    scores = rng.choice(np.linspace(0.3, 1, 20), count).astype(np.float32)  # ties keep input order
    groups = rng.integers(0, 3, count)
    keep, alive = [], list(np.argsort(-scores, kind="stable"))
    while alive:
        best = alive.pop(0)
        keep.append(best)
        alive = [i for i in alive if groups[i] != groups[best] or box_iou(boxes[[best]], boxes[[i]])[0, 0] <= 0.45]
    assert nms(boxes, scores, groups, 0.45).tolist() == keep


def greedy_reference(boxes, scores, groups, iou, limit=None):
    """Greedy NMS one pair at a time in float64: the plainest statement of what nms must keep."""
    def pair_iou(a, b):
        w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
        h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / max(union, 1e-9)
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):  # sorted() is stable: ties keep input order
        if len(keep) == limit:
            break
        if all(groups[k] != groups[i] or pair_iou(boxes[k].astype(float), boxes[i].astype(float)) <= iou
               for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("limit", [None, 5])
def test_nms_on_dense_clusters_keeps_what_greedy_nms_keeps(limit):
    """What a mosaic's decoded output looks like: tens of jittered boxes around each object, score ties,
    several classes per tile, and a zero-area box (whose IoU with itself is 0)."""
    rng = np.random.default_rng(7)
    centres = rng.uniform(20, 380, (6, 2))
    boxes = np.concatenate([np.concatenate([c - 15, c + 15]) + rng.normal(0, 3, (30, 4)) for c in centres])
    boxes = np.vstack([boxes, [50, 50, 50, 60]]).astype(np.float32)
    scores = rng.choice(np.linspace(0.3, 1, 8), len(boxes)).astype(np.float32)
    groups = rng.integers(0, 4, len(boxes))
    assert nms(boxes, scores, groups, 0.45, limit).tolist() == greedy_reference(boxes, scores, groups, 0.45, limit)


@pytest.mark.parametrize("seed", range(4))
def test_nms_with_scores_of_zero_hollow_boxes_and_ties_keeps_what_greedy_nms_keeps(seed):
    """Scores of 0 (--conf 0), tied scores, and boxes without area (empty, inverted) among overlapping ones."""
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 60, (120, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(-2, 25, (120, 2))], 1).astype(np.float32)
    boxes[::17, 2] = boxes[::17, 0]  # empty: IoU 0 with everything, itself included
    scores = rng.choice([0.0, 0.0, 0.25, 0.5, 0.75], 120).astype(np.float32)
    groups = rng.integers(0, 2, 120)
    expected = greedy_reference(np.maximum(boxes, boxes[:, [0, 1, 0, 1]]), scores, groups, 0.45)  # inverted: empty
    assert nms(boxes, scores, groups, 0.45).tolist() == expected


def test_nms_is_not_upset_by_a_box_of_infinite_extent():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [5, 5, np.inf, 20], [np.nan, 0, 4, 4]], np.float32)
    scores = np.array([0.9, 0.8, 0.95, 0.7], np.float32)
    assert nms(boxes, scores, np.array([0, 0, 1, 0]), 0.45).tolist() == [2, 0, 3]


def test_candidates_keep_row_order_and_skip_nan_objectness():
    found = candidates(rows([10, 10, 4, 4, np.nan, 1, 0], [20, 20, 2, 2, 0.5, 0, 1], [30, 30, 2, 2, 0.2, 1, 0],
                            [40, 40, 2, 2, 0.9, 0.9, 0.1]), conf=0.25)
    np.testing.assert_allclose(found.boxes[:, 0], [19, 39])
    assert found.classes.tolist() == [1, 0]
