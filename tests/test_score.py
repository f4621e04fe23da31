"""`pruneyolo score`: a run's JSONL of synthetic streams against the scenes' own ground truth, on JSONL
written from that truth with known errors, so every figure is known in advance."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from pruneyolo.cli.main import main
from pruneyolo.runner.score import scene_truth, score_run

FRAMES = range(0, 12, 2)  # every other frame, as a run that drops frames writes them: scored by frame index
SOURCES = ["synthetic:seed=5,size=320x240", "synthetic:size=320x240,objects=4",
           "synthetic:seed=9,size=320x240"]


def shifted(boxes: np.ndarray, by: float) -> np.ndarray:
    """xyxy boxes moved right by `by` box widths."""
    moved = boxes.copy()
    moved[:, [0, 2]] += by * (boxes[:, 2] - boxes[:, 0])[:, None]
    return moved


def record(stream: int, frame: int, boxes: np.ndarray, classes, scores) -> dict:
    """One JSONL line as `pruneyolo run` writes it."""
    detections = [{"box": [round(float(v), 2) for v in box], "class": int(cls), "label": str(cls),
                   "score": float(score)} for box, cls, score in zip(boxes, classes, scores, strict=True)]
    return {"stream": stream, "source": SOURCES[stream], "frame": frame, "width": 320, "height": 240,
            "detections": detections}


def write_run(path):
    """Stream 0 detects every object exactly; stream 1 every object 0.3 box widths off (IoU 0.54);
    stream 2 only its first object, plus one confident detection of nothing."""
    lines = []
    for stream in range(3):
        truths = scene_truth(SOURCES[stream], stream, FRAMES[-1] + 1)
        for frame in FRAMES:
            truth = truths[frame]
            boxes, classes, scores = truth[:, 1:], truth[:, 0], np.full(len(truth), 0.9)
            if stream == 1:
                boxes = shifted(boxes, 0.3)
            if stream == 2:
                boxes = np.concatenate([boxes[:1], [[0, 0, 5, 5]]])
                classes, scores = [truth[0, 0], 0], [0.9, 0.8]
            lines.append(json.dumps(record(stream, frame, boxes, classes, scores)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_scores_of_exact_shifted_and_partial_detections(tmp_path):
    jsonl = write_run(tmp_path / "run.jsonl")
    exact, off, partial = score_run(jsonl, SOURCES, tmp_path)
    assert [s.stream for s in (exact, off, partial)] == [0, 1, 2] and exact.frames == len(FRAMES)
    assert (exact.precision, exact.recall) == (1, 1)
    assert exact.map50 == pytest.approx(1) and exact.map50_95 == pytest.approx(1)
    assert (off.precision, off.recall, off.map50) == (1, 1, pytest.approx(1))
    assert off.map50_95 == pytest.approx(0.1)  # matched at IoU 0.50 only
    assert partial.precision == 0.5 and partial.recall == 0.25  # 4 objects a frame, one found, one false
    assert partial.map50 == pytest.approx(0.25)  # AP 1 for the found object's class, 0 for the other three


def test_the_truth_is_the_scene_of_the_stream_index_unless_seeded():
    seeded = scene_truth("synthetic:seed=1,size=320x240", 0, 3)
    assert np.array_equal(scene_truth(SOURCES[1], 1, 3)[2], seeded[2])
    assert not np.array_equal(scene_truth(SOURCES[1], 1, 1)[0], scene_truth(SOURCES[1], 2, 1)[0])


def test_cli_prints_one_row_per_stream(tmp_path):
    jsonl = write_run(tmp_path / "run.jsonl")
    args = ["score", str(jsonl)] + [arg for source in SOURCES for arg in ("--source", source)]
    result = CliRunner().invoke(main, args, terminal_width=120)
    assert result.exit_code == 0, result.output
    rows = [re.findall(r"[\d.]+", line) for line in result.output.splitlines() if re.match(r"│\s+\d", line)]
    assert rows == [["0", "6", "1.000", "1.000", "1.000", "1.000"],
                    ["1", "6", "1.000", "1.000", "1.000", "0.100"],
                    ["2", "6", "0.500", "0.250", "0.250", "0.250"]]
