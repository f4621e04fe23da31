"""Imported YOLO11 / YOLOv8 checkpoints through the rest of the pipeline: `run` (letterboxed frame, boxes back in
source pixels), `eval`, `bench` and `prune --target-*`, each held against Ultralytics' own formulas run in-test
(tests/yolov8_support.py, no Ultralytics needed)."""

from __future__ import annotations

import copy
import json

import cv2
import numpy as np
import pytest
import torch
import yolov8_support as y8
from click.testing import CliRunner
from prune_support import zero_cut_channels
from support import compile_f32

from pruneyolo.accuracy import detect, evaluate
from pruneyolo.bench.budget import Budget, Measurement, search
from pruneyolo.bench.timing import bench
from pruneyolo.cli.main import main
from pruneyolo.data.synth import CLASSES, make_dataset
from pruneyolo.detect.decode import rows_from_scores
from pruneyolo.detect.letterbox import PAD_VALUE
from pruneyolo.nn.build import DecodedModel, build_model
from pruneyolo.prune.pruning import channel_masks, prune
from pruneyolo.runner.pipeline import RunOptions
from pruneyolo.yolov5.source import import_checkpoint

WIDTH, HEIGHT = 128, 64  # the model's input
FRAME = 64  # square frames: letterboxed at scale 1 into the middle of the input, 32 pixels of padding each side
PAD_X = (WIDTH - FRAME) // 2

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(arg) for arg in args], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small YOLO11 (C3k2, SPPF, C2PSA, DWConv head) with synth's classes, saved as Ultralytics saves it."""
    torch.manual_seed(3)  # the convs' initial weights
    model = y8.randomize(y8.v11_layout(classes=len(CLASSES)), 3)
    path = tmp_path_factory.mktemp("ckpt") / "v11.pt"
    torch.save({"model": copy.deepcopy(model)}, path)
    return path, model


@pytest.fixture(scope="module")
def scores_ir(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("scores")
    invoke("convert", checkpoint[0], "--heads", "scores", "--size", f"{WIDTH}x{HEIGHT}", "-o", out)
    return out / "v11.xml"


def frame(seed: int) -> np.ndarray:
    """A synthetic u8 BGR frame: smooth blobs, so the random model's scores vary over the image."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (FRAME, FRAME), interpolation=cv2.INTER_CUBIC)


def reference_rows(model, image: np.ndarray) -> np.ndarray:
    """[N, 5 + C] rows in the frame's pixels: the frame padded into the input by hand, Ultralytics' decode."""
    canvas = np.full((HEIGHT, WIDTH, 3), PAD_VALUE, np.uint8)
    canvas[:, PAD_X:PAD_X + FRAME] = image
    _, decoded = y8.reference(model, canvas)
    rows = rows_from_scores(decoded)
    rows[:, 0] -= PAD_X
    return rows


def reference_detections(model, image: np.ndarray) -> list[tuple[int, float, np.ndarray]]:
    """(class, score, xyxy clipped to the frame) after per-class NMS at the runner's thresholds, best first."""
    found = detect(reference_rows(model, image), RunOptions().conf, RunOptions().iou)
    boxes = np.clip(found.boxes, 0, FRAME)
    return sorted(zip(found.classes.tolist(), found.scores.tolist(), boxes, strict=True), key=lambda d: -d[1])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def assert_same(ours, theirs, score_tolerance: float, box_iou: float) -> None:
    """Same classes, and each of ours paired with the unpaired one of theirs of its class that overlaps it most."""
    assert sorted(d[0] for d in ours) == sorted(d[0] for d in theirs), (ours, theirs)
    unpaired = list(theirs)
    for cls, score, box in ours:
        index = max((i for i, d in enumerate(unpaired) if d[0] == cls), key=lambda i: iou(box, unpaired[i][2]))
        their = unpaired.pop(index)
        assert abs(score - their[1]) < score_tolerance, (cls, score, their[1])
        assert iou(box, their[2]) > box_iou, (cls, box, their[2])


def test_run_puts_the_boxes_where_ultralytics_decode_puts_them(checkpoint, scores_ir, tmp_path):
    image = frame(1)
    cv2.imwrite(str(tmp_path / "frame.png"), image)
    jsonl = tmp_path / "run.jsonl"
    invoke("run", scores_ir, "--source", tmp_path / "frame.png", "--layout", "1x1", "--precision", "f32",
           "--jsonl", jsonl, "--quiet")
    (record,) = map(json.loads, jsonl.read_text().splitlines())
    assert (record["width"], record["height"]) == (FRAME, FRAME)
    ours = sorted(((d["class"], d["score"], np.array(d["box"])) for d in record["detections"]), key=lambda d: -d[1])
    theirs = reference_detections(checkpoint[1], image)
    assert len(theirs) >= 5
    assert_same(ours, theirs, 2e-3, 0.99)


def test_eval_scores_what_ultralytics_decode_predicts(checkpoint, scores_ir, tmp_path):
    data = make_dataset(tmp_path / "shapes", train=0, val=0, test=4, size=FRAME, seed=2)
    expected = evaluate(lambda images: [reference_rows(checkpoint[1], image) for image in images], data)
    assert 0 <= expected.map50_95 <= expected.map50 <= 1 and 0 <= expected.recall <= 1, expected
    for model in (checkpoint[0], scores_ir):
        invoke("eval", model, "--data", data, "--size", f"{WIDTH}x{HEIGHT}", "--json", tmp_path / "m.json")
        scored = json.loads((tmp_path / "m.json").read_text())
        for key, value in expected.as_dict().items():
            if key != "seconds":
                assert scored[key] == pytest.approx(value, abs=2e-3), (model, key, scored, expected)


def test_bench_times_the_imported_checkpoint(checkpoint, tmp_path):
    """`bench`'s timing on the imported graph (the peaks given, not measured: they do not depend on the model)."""
    graph, imported = import_checkpoint(checkpoint[0], (WIDTH, HEIGHT))
    result = bench(graph, imported.weights, tmp_path / "unused.weights", tmp_path, 0.5, ("ir-f32", "torch"),
                   app=False, peaks={"f32": 100.0})
    assert [t.variant for t in result.timings] == ["ir-f32", "torch"]
    assert all(t.latency_ms > 0 and t.rate > 0 for t in result.timings)
    assert result.timing("ir-f32").precision == "f32" and result.bflops == graph.bflops > 0
    assert result.size == (WIDTH, HEIGHT)


def test_budget_search_picks_a_percent_and_the_pruned_model_equals_the_masked_one(checkpoint, tmp_path):
    """The search's prune at the percent it picks is the plain prune at that percent, and pruning equals masking
    (cut channels' gamma and beta zeroed: the plain prune also folds a cut channel's constant into its consumers,
    exact only away from padding)."""
    graph, imported = import_checkpoint(checkpoint[0], (WIDTH, HEIGHT))
    weights = imported.weights
    budget = Budget(fps=1.25 / graph.bflops)  # a stand-in device: speed inversely proportional to BFLOPs
    found = search(graph, weights, budget, lambda result: Measurement(1 / result.graph.bflops, "fake"), step=0.05)
    chosen = found.chosen
    assert chosen.met and 0 < chosen.percent < 1 and found.result.graph.bflops <= graph.bflops / 1.25
    assert prune(graph, weights, chosen.percent).graph.params == found.result.graph.params
    masked = copy.deepcopy(weights)
    masks, _, _ = channel_masks(graph, masked, chosen.percent)
    zero_cut_channels(masked, masks)
    pruned = prune(graph, masked, chosen.percent)
    assert pruned.graph.params == found.result.graph.params
    x = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = DecodedModel(build_model(graph, masked), graph)(x).numpy()
        actual = DecodedModel(build_model(pruned.graph, pruned.weights), pruned.graph)(x).numpy()
    assert actual.shape == expected.shape
    assert float(np.abs(actual - expected).max() / np.abs(expected).max()) < 1e-4


def test_prune_target_fps_on_the_device_writes_a_model_that_runs(checkpoint, tmp_path):
    output = invoke("prune", checkpoint[0], "--size", f"{WIDTH}x{HEIGHT}", "--target-fps", "0.01", "--seconds",
                    "0.5", "--precision", "f32", "-o", tmp_path)
    assert "chose percent 0" in output
    cfg = tmp_path / "prune_0_v11.cfg"
    invoke("convert", cfg, "--weights", cfg.with_suffix(".weights"), "--heads", "scores", "-o", tmp_path / "ir")
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, PAD_X:PAD_X + FRAME] = frame(3)
    compiled = compile_f32(str(tmp_path / "ir/prune_0_v11.xml"))
    actual = compiled(image[None])[compiled.outputs[0]]
    _, decoded = y8.reference(checkpoint[1], image)
    assert actual.shape == decoded.shape
    assert float(np.abs(actual - decoded).max()) < 1e-2
