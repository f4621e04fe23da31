"""One letterbox for run, eval and INT8 calibration: its geometry, its inverse, and eval scoring the boxes run
reports on a non-square image."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from fixtures import random_weights
from runner_support import make_ir
from support import compile_f32, relative_error

from pruneyolo.accuracy import detect, ir_predictor, torch_predictor
from pruneyolo.cli.main import main
from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import build_graph
from pruneyolo.detect.letterbox import PAD_VALUE, letterbox, place, rows_to_source, to_source, to_target
from pruneyolo.export.build import build_ir

BLUE, RED = (255, 0, 0), (0, 0, 255)
# A 320x180 frame in a 128x128 input: scale 0.4, content 128x72 at pad_y 28. The bright-cell IR reports a 24 px
# box on each 16 px cell an object covers, so each 60 px object comes back as a 60x60 box around its centre.
OBJECTS = [((100, 70), BLUE, 0), ((260, 110), RED, 1), ((180, 30), BLUE, 0)]
EXPECTED = {0: [(70, 40, 130, 100), (150, 0, 210, 60)], 1: [(230, 80, 290, 140)]}

SMALL = """[net]
width=64
height=64

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=18
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def scene() -> np.ndarray:
    frame = np.full((180, 320, 3), 30, np.uint8)
    for (x, y), colour, _ in OBJECTS:
        frame[y - 30:y + 30, x - 30:x + 30] = colour
    return frame


def by_class(boxes, classes) -> dict[int, list[tuple]]:
    found: dict[int, list[tuple]] = {}
    for box, cls in sorted(zip(map(tuple, np.round(boxes, 2)), classes, strict=True)):
        found.setdefault(int(cls), []).append(box)
    return found


def test_letterbox_pads_a_wide_image_top_and_bottom():
    image = np.full((50, 100, 3), 200, np.uint8)
    canvas, placement = letterbox(image, 64, 64)
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert (placement.pad_x, placement.pad_y, placement.width, placement.height) == (0, 16, 64, 32)
    assert (canvas[16:48] == 200).all() and (canvas[:16] == PAD_VALUE).all() and (canvas[48:] == PAD_VALUE).all()


@pytest.mark.parametrize("size", [(320, 180), (180, 320), (50, 300), (64, 64)])
def test_to_target_then_to_source_is_identity(size):
    placement = place(*size, 128, 96)
    w, h = size
    boxes = np.array([[0, 0, w, h], [w * 0.1, h * 0.2, w * 0.5, h * 0.9]], np.float32)
    np.testing.assert_allclose(to_source(to_target(boxes, placement, (128, 0)), placement, (128, 0)), boxes,
                               atol=1e-3)


def test_rows_to_source_maps_centre_and_size_and_clips_to_the_image():
    placement = place(320, 180, 128, 128)  # scale 0.4, pad_y 28
    rows = np.array([[40, 56, 24, 24, 0.9, 0.1], [8, 30, 24, 8, 0.5, 0.5]], np.float32)
    mapped = rows_to_source(rows, placement)
    np.testing.assert_allclose(mapped[0], [100, 70, 60, 60, 0.9, 0.1], atol=1e-4)
    np.testing.assert_allclose(mapped[1], [25, 7.5, 50, 15, 0.5, 0.5], atol=1e-4)  # x -4..20, y 26..34: clipped


def test_eval_and_run_report_the_same_boxes_on_a_non_square_image(tmp_path):
    xml = make_ir(tmp_path / "model.xml", 128, 128, stride=16, anchor=(24, 24))
    image = scene()
    cv2.imwrite(str(tmp_path / "wide.png"), image)
    jsonl = tmp_path / "run.jsonl"
    result = CliRunner().invoke(main, ["run", str(xml), "--source", str(tmp_path / "wide.png"), "--layout", "1x1",
                                       "--jsonl", str(jsonl), "--quiet", "--conf", "0.5", "--iou", "0.45"])
    assert result.exit_code == 0, result.output
    (record,) = map(json.loads, jsonl.read_text().splitlines())
    run = record["detections"]
    evaluated = detect(ir_predictor(xml)([image])[0], 0.5, 0.45)
    assert by_class([d["box"] for d in run], [d["class"] for d in run]) == EXPECTED
    assert by_class(evaluated.boxes, evaluated.classes) == EXPECTED
    np.testing.assert_allclose(sorted(d["score"] for d in run), sorted(evaluated.scores), atol=1e-4)


def test_torch_predictor_sees_what_run_feeds_the_ir(tmp_path):
    graph = build_graph(parse_cfg_text(SMALL, "small.cfg"), "small.cfg")
    weights = random_weights(graph, 3)
    image = np.random.default_rng(0).integers(0, 256, (40, 96, 3), dtype=np.uint8)
    canvas, placement = letterbox(image, 64, 64)
    fed_to_ir = compile_f32(build_ir(graph, weights).model)(canvas[None])[0][0]
    in_torch = torch_predictor(graph, weights)([image])[0]
    assert in_torch.shape == (3 * 32 * 32, 6)
    assert relative_error(in_torch, rows_to_source(fed_to_ir, placement)) < 1e-4
