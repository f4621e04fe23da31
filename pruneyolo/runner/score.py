"""Score a `pruneyolo run` JSONL of synthetic streams against the scenes' own ground truth.

`synthetic:` sources are deterministic (SceneStream by seed), and unpaced ones drop no frame, so replaying
each scene gives the true boxes of every frame the runner wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pruneyolo.accuracy import coco_records, coco_scores, true_positives
from pruneyolo.data.synth import CLASSES, SceneStream
from pruneyolo.detect.boxes import Detections
from pruneyolo.files import atomic_write
from pruneyolo.runner.sources import parse_source


@dataclass(frozen=True)
class StreamScore:
    """Accuracy of one stream's detections: P and R at IoU 0.5, AP@0.5 and AP@0.5:0.95 (COCO)."""

    stream: int
    frames: int
    precision: float
    recall: float
    map50: float
    map50_95: float


def read_jsonl(path) -> dict[int, list[dict]]:
    """JSONL lines grouped by stream, in frame order."""
    streams: dict[int, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        streams.setdefault(record["stream"], []).append(record)
    return {stream: sorted(records, key=lambda r: r["frame"]) for stream, records in streams.items()}


def scene_truth(source: str, stream: int, frames: int) -> list[np.ndarray]:
    """The true boxes [K, 5] (class, x1, y1, x2, y2) of a synthetic source's first `frames` frames."""
    options = dict(parse_source(source).options)
    options.pop("fps", None)
    options.setdefault("seed", stream)
    scene = SceneStream(**options)
    return [scene.read()[1] for _ in range(frames)]


def _detections(record: dict) -> Detections:
    found = record["detections"]
    return Detections(np.asarray([d["box"] for d in found], np.float32).reshape(-1, 4),
                      np.asarray([d["score"] for d in found], np.float32),
                      np.asarray([d["class"] for d in found], np.int64))


def _coco_truth(truths: list[np.ndarray], width: int, height: int) -> dict:
    """COCO ground truth with image id = frame + 1 and category id = class + 1 (as evaluate scores them)."""
    annotations = []
    for frame, boxes in enumerate(truths):
        for cls, x1, y1, x2, y2 in boxes.astype(float):
            annotations.append({"id": len(annotations) + 1, "image_id": frame + 1, "category_id": int(cls) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return {"images": [{"id": i + 1, "width": width, "height": height} for i in range(len(truths))],
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]}


def score_stream(records: list[dict], source: str, stream: int, workdir: Path, conf: float = 0.25) -> StreamScore:
    """Score one stream: every frame in `records` against the replayed scene."""
    truths = scene_truth(source, stream, records[-1]["frame"] + 1)
    matched = found = 0
    results = []
    for record in records:
        detections, truth = _detections(record), truths[record["frame"]]
        confident = detections.take(np.flatnonzero(detections.scores >= conf))
        matched += true_positives(confident, truth)
        found += len(confident)
        results += coco_records(detections, record["frame"] + 1)
    truth_path = workdir / f"truth_stream{stream}.json"
    atomic_write(truth_path, json.dumps(_coco_truth(truths, records[0]["width"], records[0]["height"])))
    map50, map50_95 = coco_scores(truth_path, results, [r["frame"] + 1 for r in records])
    total_truth = sum(len(truths[r["frame"]]) for r in records)
    return StreamScore(stream, len(records), matched / max(found, 1), matched / max(total_truth, 1), map50, map50_95)


def score_run(jsonl, sources: list[str], workdir) -> list[StreamScore]:
    """Score every stream of a run's JSONL; `sources` are the run's --source values in order."""
    workdir = Path(workdir)
    streams = read_jsonl(jsonl)
    return [score_stream(streams[stream], sources[stream], stream, workdir) for stream in sorted(streams)]
