"""The IR in OpenVINO's own model API (`openvino-model-api`): `--heads scores` loads as its YOLOv5 wrapper,
which letterboxes a frame of any size as `pruneyolo run` does and gives the same boxes, the right ones."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from click.testing import CliRunner
from model_api.adapters import OpenvinoAdapter
from model_api.adapters.utils import resize_image_letterbox
from model_api.models import DetectionModel
from openvino.preprocess import PrePostProcessor

from pruneyolo.accuracy import ir_predictor
from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.data.synth import CLASSES, SceneStream
from pruneyolo.detect.boxes import candidates
from pruneyolo.detect.letterbox import PAD_VALUE, place
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.detect.mosaic import make_layout, paste
from pruneyolo.export.convert import read_names
from pruneyolo.runner.pipeline import RunOptions

CFGS = Path(__file__).parents[1] / "cfgs"
CFG, WEIGHTS, NAMES = CFGS / "prune_0.88.cfg", CFGS / "prune_0.88.weights", CFGS / "synth.names"
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
SCENE = 6  # SceneStream seed of the main test frame
EXACT_SIZE = (768, 576)  # 3x the 256x192 letterboxed content: cv2's and OpenVINO's bilinear resize agree exactly


def invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(arg) for arg in args], terminal_width=160)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def irs(tmp_path_factory) -> dict[str, Path]:
    """The shipped demo model converted with each --heads mode, as a user would."""
    out = tmp_path_factory.mktemp("irs")
    for mode in ("decoded", "raw", "scores"):
        invoke("convert", CFG, "--weights", WEIGHTS, "--names", NAMES, "--heads", mode, "-o", out / mode)
    return {mode: out / mode / "prune_0.88.xml" for mode in ("decoded", "raw", "scores")}


def scene(size: tuple[int, int], seed: int = SCENE) -> tuple[np.ndarray, np.ndarray]:
    """The first frame of a synthetic camera and its objects [K, 5] (class, x1, y1, x2, y2)."""
    return SceneStream(seed, *size).read()


def run_detections(xml: Path, frame: np.ndarray, tmp_path: Path) -> list[tuple[str, float, np.ndarray]]:
    """(label, score, xyxy) of the frame through `pruneyolo run` (one 1x1 mosaic, f32), best score first."""
    image, jsonl = tmp_path / f"{xml.parent.name}.png", tmp_path / f"{xml.parent.name}.jsonl"
    cv2.imwrite(str(image), frame)
    invoke("run", xml, "--source", image, "--layout", "1x1", "--precision", "f32", "--jsonl", jsonl, "--quiet")
    (record,) = map(json.loads, jsonl.read_text().splitlines())
    found = [(d["label"], d["score"], np.array(d["box"])) for d in record["detections"]]
    return sorted(found, key=lambda d: -d[1])


def api_detections(model, frame: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
    """(label, score, xyxy) from a model_api DetectionModel, best score first."""
    result = model(frame)
    found = [(name, float(score), box.astype(np.float64))
             for name, score, box in zip(result.label_names, result.scores, result.bboxes, strict=True)]
    return sorted(found, key=lambda d: -d[1])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def assert_same(ours, theirs, score_tolerance: float, box_iou: float = 0.9) -> None:
    """The same detections, each of ours paired with the unpaired one of theirs of its label that overlaps it
    most (scores within the tolerance can swap places in the order)."""
    assert sorted(d[0] for d in theirs) == sorted(d[0] for d in ours), (ours, theirs)
    unpaired = list(theirs)
    for label, score, box in ours:
        their = max((d for d in unpaired if d[0] == label), key=lambda d: iou(box, d[2]))
        unpaired.remove(their)
        assert abs(score - their[1]) < score_tolerance, (label, score, their[1])
        assert iou(box, their[2]) > box_iou, (label, box, their[2])


def test_scores_ir_carries_model_api_keys_that_agree_with_its_embedded_preprocessing(irs):
    model = DetectionModel.create_model(str(irs["scores"]), device="CPU", preload=False)
    assert type(model).__name__ == "YOLOv5"
    params = model.params
    assert params.labels == read_names(NAMES)
    # the IR takes u8 BGR and does BGR->RGB and /255 itself: model_api must only letterbox
    assert params.reverse_input_channels is False and params.scale_values == [] and params.mean_values == []
    assert (params.resize_type, params.pad_value) == ("fit_to_window_letterbox", PAD_VALUE)
    assert (params.confidence_threshold, params.iou_threshold) == (RunOptions().conf, RunOptions().iou)


@pytest.mark.parametrize("mode", ["decoded", "raw", "scores"])
def test_metadata_reads_back_and_names_a_wrapper_only_where_model_api_parses_the_output(irs, mode):
    model = ov.Core().read_model(irs[mode])
    expected = ModelInfo.from_graph(load_graph(CFG), read_names(NAMES), mode)
    assert ModelInfo.read(model) == expected
    written = {key: model.get_rt_info(["model_info", key]).astype(str) for key in expected.to_rt_info()}
    assert written == expected.to_rt_info()
    assert written.get("model_type") == ("YOLOv5" if mode == "scores" else None)
    if mode == "scores":
        (output,) = model.outputs
        assert list(output.get_shape()) == [1, 4 + len(CLASSES), (8 * 8 + 16 * 16 + 32 * 32) * 3]  # 3 heads at 256


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (97, 61), (1920, 1080)])
def test_model_api_letterbox_places_frames_where_pruneyolo_run_does(size):
    """model_api's embedded letterbox (its own graph) against the runner's: same scale, same padding each side;
    pixels within one grey level (OpenVINO rounds the exact bilinear value, cv2's u8 path is fixed-point)."""
    frame = scene(size)[0]
    width, height = 256, 256
    image = ops.parameter([1, height, width, 3], ov.Type.u8, name="image")
    ppp = PrePostProcessor(ov.Model([ops.result(ops.convert(image, ov.Type.f32))], [image]))
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_shape([1, -1, -1, 3])
    ppp.input().preprocess().custom(resize_image_letterbox((width, height), "linear", PAD_VALUE, input_dtype="u8"))
    theirs = ov.Core().compile_model(ppp.build(), "CPU", F32)(frame[None])[0][0]
    layout = make_layout("1x1", 1, width, height)
    ours = np.full((height, width, 3), PAD_VALUE, np.uint8)
    placement = paste(ours, layout, 0, frame)
    content = np.zeros((height, width), bool)
    content[placement.pad_y:placement.pad_y + placement.height, placement.pad_x:placement.pad_x + placement.width] = 1
    assert placement == place(*size, width, height)
    assert np.all(theirs[~content] == PAD_VALUE)
    assert np.abs(theirs[content].astype(int) - ours[content]).max() <= 1


@pytest.mark.parametrize(("size", "seed", "score_tolerance"), [
    (EXACT_SIZE, SCENE, 1e-3),
    ((640, 480), 1, 6e-3),  # scale 0.4: the two resizers differ by one grey level in ~8% of pixels (4e-3 seen)
])
def test_model_api_gives_the_boxes_pruneyolo_run_gives(irs, tmp_path, size, seed, score_tolerance):
    frame, _ = scene(size, seed)
    ours = run_detections(irs["scores"], frame, tmp_path)
    adapter = OpenvinoAdapter(ov.Core(), str(irs["scores"]), device="CPU", plugin_config=F32)
    theirs = api_detections(DetectionModel.create_model(adapter), frame)
    assert len(ours) >= 3
    assert_same(ours, theirs, score_tolerance)


def test_model_api_finds_the_scenes_objects(irs):
    """The README's three lines at the device's default precision: every box is on one of the scene's objects,
    with its class; the demo model (mAP50 0.61) finds at least three of the four here."""
    frame, truth = scene(EXACT_SIZE)
    model = DetectionModel.create_model(str(irs["scores"]), device="CPU")
    found = api_detections(model, frame)
    matched = set()
    for label, _, box in found:
        overlaps = [iou(box, row[1:]) if CLASSES[int(row[0])] == label else 0.0 for row in truth]
        best = int(np.argmax(overlaps))
        assert overlaps[best] > 0.5, (label, box, truth)
        matched.add(best)
    assert len(matched) >= 3, found


def test_pruneyolo_run_gives_the_same_detections_for_every_heads_mode(irs, tmp_path):
    frame, _ = scene(EXACT_SIZE)
    decoded = run_detections(irs["decoded"], frame, tmp_path)
    assert len(decoded) >= 3
    for mode in ("raw", "scores"):
        found = run_detections(irs[mode], frame, tmp_path)
        assert_same(decoded, found, 2e-4, box_iou=0.999)


def test_eval_predicts_from_a_scores_ir_as_from_a_decoded_one(irs):
    frame, _ = scene(EXACT_SIZE)
    decoded, scores = (candidates(ir_predictor(irs[mode])([frame])[0], RunOptions().conf)
                       for mode in ("decoded", "scores"))
    assert len(decoded) >= 3 and np.array_equal(decoded.classes, scores.classes)
    assert np.allclose(decoded.scores, scores.scores, atol=1e-3) and np.allclose(decoded.boxes, scores.boxes, atol=0.1)
