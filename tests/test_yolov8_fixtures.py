"""The four real Ultralytics checkpoints of ../shared/yolov8/fixtures (YOLOv8n and YOLO11n stock, a Torch-Pruning
C2f_v2 prune, a network-slimming prune) against the outputs their own code produced. Skipped without ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from cfg_sources import SHARED
from click.testing import CliRunner
from support import compile_f32, relative_error

from pruneyolo.cli.main import main
from pruneyolo.detect import CONFIDENCE_THRESHOLD, IOU_THRESHOLD
from pruneyolo.detect.boxes import select
from pruneyolo.detect.decode import decode_raw, rows_from_scores
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.yolov5.checkpoint import load_checkpoint
from pruneyolo.yolov5.source import import_checkpoint

FIXTURES = (SHARED or Path("/nonexistent")) / "yolov8" / "fixtures"
NAMES = ("v8n_stock", "v8n_tp_pruned", "v11n_stock", "v8n_slim_pruned")
FIRST_NAMES = {"v8n_stock": "person", "v8n_tp_pruned": "person", "v11n_stock": "person", "v8n_slim_pruned": "0"}
BOUND = 1e-3  # max|a-b| / max(1, max|b|)

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no YOLOv8 fixtures at {FIXTURES} (a fresh clone has none)")


@pytest.fixture(scope="module", params=NAMES)
def fixture(request):
    reference = np.load(FIXTURES / f"{request.param}.ref.npz")
    return request.param, FIXTURES / f"{request.param}.pt", {key: reference[key] for key in reference.files}


@pytest.fixture(scope="module")
def scores_ir(tmp_path_factory):
    """`pruneyolo convert X.pt --heads scores --size WxH`, run once per checkpoint and size in this worker."""
    made: dict[tuple[str, str], Path] = {}

    def convert(name: str, size: str) -> Path:
        if (name, size) not in made:
            out = tmp_path_factory.mktemp(f"scores_{name}")
            result = CliRunner().invoke(main, ["convert", str(FIXTURES / f"{name}.pt"), "-o", str(out), "--heads",
                                               "scores", "--size", size])
            assert result.exit_code == 0, result.output
            made[name, size] = out / f"{name}.xml"
        return made[name, size]

    return convert


def _size(reference) -> tuple[int, int]:
    height, width, _ = reference["image"].shape
    return width, height


def test_ir_from_convert_equals_the_reference(fixture, scores_ir, tmp_path):
    """`pruneyolo convert X.pt`: scores IR == `decoded` (Ultralytics' [1, 4+C, N]); raw IR == raw_0..2."""
    name, path, reference = fixture
    width, height = _size(reference)
    for heads in ("scores", "raw"):
        if heads == "scores":
            xml = scores_ir(name, f"{width}x{height}")
        else:
            result = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / heads), "--heads", heads,
                                               "--size", f"{width}x{height}"])
            assert result.exit_code == 0, result.output
            xml = tmp_path / heads / f"{name}.xml"
        compiled = compile_f32(str(xml))
        results = compiled(reference["image"][None])
        outputs = [results[output] for output in compiled.outputs]
        expected = [reference["decoded"]] if heads == "scores" else [reference[f"raw_{i}"] for i in range(3)]
        for actual, wanted in zip(outputs, expected, strict=True):
            assert actual.shape == wanted.shape
            assert relative_error(actual, wanted) < BOUND
        del compiled


def test_numpy_decode_of_the_raw_reference_is_the_decoded_reference(fixture):
    _, path, reference = fixture
    graph, imported = import_checkpoint(path, _size(reference))
    info = ModelInfo.from_graph(graph, imported.names, "raw")
    rows = decode_raw([reference[f"raw_{i}"] for i in range(3)], info)
    assert relative_error(rows, rows_from_scores(reference["decoded"])) < 1e-4


def _parameters(record, seen: set[int]) -> int:
    """Weights and biases (BatchNorm's gamma and beta included, its running statistics not) of a record tree."""
    if id(record) in seen:
        return 0
    seen.add(id(record))
    own = sum(array.size for name, array in record.tensors.items() if name in ("weight", "bias"))
    return own + sum(_parameters(child, seen) for child in record.children.values())


def test_structure_names_and_parameters_come_from_the_checkpoint(fixture):
    name, path, reference = fixture
    graph, imported = import_checkpoint(path, _size(reference))
    reg_max = graph.heads[0].reg_max
    assert graph.params == _parameters(load_checkpoint(path).model, set()) - reg_max  # DFL's fixed arange: no array
    assert imported.names[0] == FIRST_NAMES[name] and len(imported.names) == graph.heads[0].classes == 80
    assert [head.stride for head in graph.heads] == reference["strides"].tolist()
    assert [head.kind for head in graph.heads] == ["detect"] * 3 and reg_max == 16
    assert any(node.kind == "attention" for node in graph.nodes) == name.startswith("v11")


def test_model_api_loads_the_scores_ir_as_yolov8_and_finds_the_reference_boxes(scores_ir):
    """openvino-model-api's YOLOv8 wrapper on the IR (its own letterbox: a no-op at the model's size) gives the
    boxes that Ultralytics' decoded output gives after pruneyolo's confidence filter and NMS."""
    from model_api.adapters import OpenvinoAdapter
    from model_api.models import DetectionModel

    name = "v8n_stock"
    reference = np.load(FIXTURES / f"{name}.ref.npz")
    adapter = OpenvinoAdapter(ov.Core(), str(scores_ir(name, "320x320")), device="CPU",
                              plugin_config={"INFERENCE_PRECISION_HINT": "f32"})  # the default may be bf16
    model = DetectionModel.create_model(adapter, configuration={"confidence_threshold": CONFIDENCE_THRESHOLD})
    assert type(model).__name__ == "YOLOv8"
    found = model(reference["image"])
    expected, _ = select(rows_from_scores(reference["decoded"]), lambda boxes: np.zeros(len(boxes), np.int64),
                         CONFIDENCE_THRESHOLD, IOU_THRESHOLD)
    assert len(expected) > 0 and len(found.scores) == len(expected)
    order, theirs = np.argsort(-expected.scores), np.argsort(-np.asarray(found.scores))
    np.testing.assert_allclose(np.asarray(found.scores)[theirs], expected.scores[order], atol=2e-3)
    assert np.array_equal(np.asarray(found.labels)[theirs], expected.classes[order])
    assert np.abs(np.asarray(found.bboxes)[theirs] - np.clip(expected.boxes[order], 0, 320)).max() <= 1.0


def _model_api_rule(decoded: np.ndarray, confidence: float, iou_threshold: float, width: int, height: int):
    """model_api's YOLOv8 post-processing restated on Ultralytics' own `decoded`: each point's best class above
    the confidence, greedy NMS per class, boxes rounded to whole pixels -> (labels, scores, xyxy), best first."""
    rows = decoded[0].T
    scores_all = rows[:, 4:]
    rows, scores_all = rows[(scores_all > confidence).any(1)], scores_all[(scores_all > confidence).any(1)]
    labels, scores = scores_all.argmax(1), scores_all.max(1)
    boxes = np.concatenate([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], 1)
    keep = []
    for label in np.unique(labels):
        order = [i for i in np.argsort(-scores, kind="stable") if labels[i] == label]
        while order:
            best, order = order[0], order[1:]
            keep.append(best)
            order = [i for i in order if _iou(boxes[best], boxes[i]) <= iou_threshold]
    keep = sorted(keep, key=lambda i: -scores[i])
    whole = np.clip(np.round(boxes[keep]), 0, [width, height, width, height])
    return labels[keep], scores[keep], whole


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def test_model_api_loads_the_scores_ir_and_finds_the_reference_boxes(fixture, scores_ir):
    """openvino model_api's YOLOv8 wrapper on our `--heads scores` IR finds the boxes its own rule finds in the
    output Ultralytics' code computed (same labels, scores within 1e-3, corners within a pixel)."""
    from model_api.adapters import OpenvinoAdapter
    from model_api.models import DetectionModel

    name, _, reference = fixture
    width, height = _size(reference)
    adapter = OpenvinoAdapter(ov.Core(), str(scores_ir(name, f"{width}x{height}")), device="CPU",
                              plugin_config={"INFERENCE_PRECISION_HINT": "f32"})
    model = DetectionModel.create_model(adapter)
    assert type(model).__name__ in ("YOLOv8", "YOLO11")
    found = model(reference["image"])
    labels, scores, boxes = _model_api_rule(reference["decoded"], model.params.confidence_threshold,
                                            model.params.iou_threshold, width, height)
    assert len(labels) > 0
    order = np.lexsort((found.bboxes[:, 0], found.labels))
    wanted = np.lexsort((boxes[:, 0], labels))
    assert found.labels[order].tolist() == labels[wanted].tolist()
    assert np.abs(found.scores[order] - scores[wanted]).max() < 1e-3
    assert np.abs(found.bboxes[order] - boxes[wanted]).max() <= 1


@pytest.mark.parametrize("name", ["v8n_stock", "v11n_stock"])
def test_int8_ir_follows_the_reference(name, tmp_path):
    """`convert --storage int8` (NNCF on 16 synthetic scenes; the DFL decode stays float): the quantized IR's
    boxes and class scores follow Ultralytics' f32 output on the fixture's image. The fixtures' weights are
    synthetic, so closeness, not detections, is what can be held (box coordinates r > 0.99, scores r > 0.8)."""
    reference = np.load(FIXTURES / f"{name}.ref.npz")
    width, height = _size(reference)
    result = CliRunner().invoke(main, ["convert", str(FIXTURES / f"{name}.pt"), "-o", str(tmp_path), "--heads",
                                       "scores", "--size", f"{width}x{height}", "--storage", "int8", "--calib",
                                       "synthetic", "--calib-size", "16"])
    assert result.exit_code == 0, result.output
    compiled = compile_f32(str(tmp_path / f"{name}.xml"))
    actual = compiled(reference["image"][None])[compiled.outputs[0]]
    wanted = reference["decoded"]
    assert actual.shape == wanted.shape
    assert np.corrcoef(actual[0, :4].ravel(), wanted[0, :4].ravel())[0, 1] > 0.99
    assert np.corrcoef(actual[0, 4:].ravel(), wanted[0, 4:].ravel())[0, 1] > 0.8
    assert ModelInfo.read(ov.Core().read_model(str(tmp_path / f"{name}.xml"))).storage == "int8"
