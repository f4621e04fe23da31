"""Detection accuracy on a dataset split: P and R at one confidence, mAP@0.5 and mAP@0.5:0.95 by pycocotools;
`train`, `eval`, `convert --eval`, `score` and the budget search all score through here.

A predictor maps BGR uint8 images to decoded rows [N, 5+C] (cx, cy, w, h in the image's pixels, objectness,
class scores); the PyTorch module and an OpenVINO IR each have one, so both are scored the same way. Both
letterbox the images as `pruneyolo run` does, so the score is the deployed model's.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pruneyolo.data.dataset import load_split, pixel_boxes, read_image
from pruneyolo.detect.boxes import Detections, box_iou, candidates, nms
from pruneyolo.detect.letterbox import letterbox, rows_to_source
from pruneyolo.errors import PruneyoloError

if TYPE_CHECKING:
    import torch

    from pruneyolo.darknet.graph import Graph
    from pruneyolo.darknet.weights import DarknetWeights

Predictor = Callable[[list[np.ndarray]], list[np.ndarray]]
MAX_DETECTIONS = 300  # per image, as COCO scores them
BATCH = 8


@dataclass(frozen=True)
class Metrics:
    """Scores of one model on one split."""

    precision: float
    recall: float
    map50: float
    map50_95: float
    images: int
    seconds: float

    def as_dict(self) -> dict:
        return {"P": self.precision, "R": self.recall, "mAP50": self.map50, "mAP50-95": self.map50_95,
                "images": self.images, "seconds": round(self.seconds, 1)}


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """BGR uint8 images -> float NCHW RGB in [0, 1] (channels-last memory, faster on CPU)."""
    import torch

    batch = torch.from_numpy(np.stack(images)[..., ::-1].copy()).permute(0, 3, 1, 2).float().div_(255)
    return batch.contiguous(memory_format=torch.channels_last)


def torch_predictor(graph: Graph, weights: DarknetWeights) -> Predictor:
    """Predict with the in-process module: letterbox to the cfg's size, decode in the graph."""
    import torch

    from pruneyolo.nn.build import DecodedModel, build_model

    model = DecodedModel(build_model(graph, weights), graph).eval()

    def predict(images: list[np.ndarray]) -> list[np.ndarray]:
        boxed = [letterbox(image, *graph.size) for image in images]
        with torch.inference_mode():
            rows = model(to_tensor([canvas for canvas, _ in boxed])).numpy()
        return [rows_to_source(r, placement) for r, (_, placement) in zip(rows, boxed, strict=True)]

    return predict


def ir_predictor(xml, device: str = "CPU") -> Predictor:
    """Predict with an IR from `pruneyolo convert` (u8 BGR NHWC input, any heads mode, read as `pruneyolo run`
    reads it)."""
    import openvino as ov

    from pruneyolo.detect.decode import rows_of
    from pruneyolo.detect.metadata import ModelInfo

    core = ov.Core()
    model = core.read_model(str(xml))
    info = ModelInfo.read(model)
    compiled = core.compile_model(model, device)
    request = compiled.create_infer_request()

    def predict(images: list[np.ndarray]) -> list[np.ndarray]:
        results = []
        for image in images:
            canvas, placement = letterbox(image, info.input_width, info.input_height)
            outputs = request.infer({0: canvas[None]})
            rows = rows_of([np.asarray(outputs[output]) for output in compiled.outputs], info)
            results.append(rows_to_source(rows, placement))
        return results

    return predict


def detect(rows: np.ndarray, conf: float, iou: float) -> Detections:
    """Per-class NMS over rows scoring >= conf, best MAX_DETECTIONS kept (best score first)."""
    found = candidates(rows, conf)
    return found.take(nms(found.boxes, found.scores, found.classes, iou, MAX_DETECTIONS))


def coco_records(detections: Detections, image_id: int) -> list[dict]:
    """Detections as COCO result records (xywh, category = class + 1)."""
    boxes = detections.boxes.astype(np.float64)
    return [{"image_id": image_id, "category_id": int(c) + 1, "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for b, s, c in zip(boxes, detections.scores, detections.classes, strict=True)]


def true_positives(detections: Detections, truth: np.ndarray, iou: float = 0.5) -> int:
    """Detections matched one-to-one (greedily, best score first) to same-class truth [K, 5] at >= iou."""
    if not len(detections) or not len(truth):
        return 0
    overlap = box_iou(detections.boxes, truth[:, 1:5])
    overlap[detections.classes[:, None] != truth[None, :, 0].astype(np.int64)] = 0
    taken = np.zeros(len(truth), bool)
    matched = 0
    for row in overlap[np.argsort(-detections.scores, kind="stable")]:
        row = np.where(taken, 0, row)
        best = int(row.argmax())
        if row[best] >= iou:
            taken[best], matched = True, matched + 1
    return matched


def coco_scores(coco_path: Path, records: list[dict], image_ids: list[int]) -> tuple[float, float]:
    """(mAP@0.5, mAP@0.5:0.95) of result records on the given images of a COCO json, printout silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not records:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(coco_path))
        scored = COCOeval(truth, truth.loadRes(records), "bbox")
        scored.params.imgIds = image_ids
        scored.evaluate()
        scored.accumulate()
        scored.summarize()
    return float(scored.stats[1]), float(scored.stats[0])


def image_id(sample) -> int:
    """A synth image's COCO id: its file number + 1."""
    return int(sample.image.stem) + 1


def coco_path(data_dir, split: str) -> Path:
    """The COCO json of a split."""
    splits = json.loads((Path(data_dir) / "data.json").read_text())["splits"]
    return Path(data_dir) / splits[split]["coco"]


def evaluate(predict: Predictor, data_dir, split: str = "test", conf: float = 0.001, iou: float = 0.6,
             pr_conf: float = 0.25, limit: int | None = None) -> Metrics:
    """Score a predictor on a split: mAP from detections >= conf, P and R from those >= pr_conf at IoU 0.5."""
    samples = load_split(data_dir, split)[:limit]
    if not samples:
        raise PruneyoloError(f"{data_dir}: split {split!r} has no images")
    started = time.perf_counter()
    records, matched, detected, objects = [], 0, 0, 0
    for start in range(0, len(samples), BATCH):
        chunk = samples[start:start + BATCH]
        images = [read_image(sample.image) for sample in chunk]
        for sample, image, rows in zip(chunk, images, predict(images), strict=True):
            found = detect(rows, conf, iou)
            records += coco_records(found, image_id(sample))
            confident = found.take(np.flatnonzero(found.scores >= pr_conf))
            truth = np.concatenate([sample.labels[:, :1], pixel_boxes(sample.labels, *image.shape[1::-1])], 1)
            matched += true_positives(confident, truth)
            detected, objects = detected + len(confident), objects + len(truth)
    map50, map50_95 = coco_scores(coco_path(data_dir, split), records, [image_id(s) for s in samples])
    return Metrics(matched / max(detected, 1), matched / max(objects, 1), map50, map50_95, len(samples),
                   time.perf_counter() - started)


def map_vs_fp32(xml, float_model, data_dir, storage: str) -> tuple[Metrics, Metrics]:
    """Test-split metrics of the IR at `xml`, written with weight `storage`, and of the FP32 ov.Model it came from
    (both at the device default)."""
    from pruneyolo.export.convert import save_ir

    metrics = evaluate(ir_predictor(xml), data_dir)
    if storage == "fp32":
        return metrics, metrics
    with tempfile.TemporaryDirectory() as tmp:
        reference = save_ir(float_model, Path(tmp) / "fp32.xml")
        return metrics, evaluate(ir_predictor(reference), data_dir)
