"""The three real YOLOv5 checkpoints of ../shared/yolov5/fixtures (ultralytics v7.0, midasklr v5.0 pruned,
yolov5-6.2 prune_tools pruned) against the outputs their own code produced. Skipped without ../shared."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cfg_sources import SHARED
from click.testing import CliRunner
from support import compile_f32, opencv_heads, relative_error
from torch import nn

from pruneyolo.cli.main import main
from pruneyolo.nn.build import build_model, module_name
from pruneyolo.yolov5.checkpoint import load_checkpoint
from pruneyolo.yolov5.source import import_checkpoint, write_import

FIXTURES = (SHARED or Path("/nonexistent")) / "yolov5" / "fixtures"
FIRST_NAMES = {"v7_yolov5n": "person", "v5_midasklr_yolov5s_pruned": "aeroplane",
               "v62_prunetools_yolov5n_pruned": "face"}
BOUND = 1e-3  # max|a-b| / max(1, max|b|)

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no YOLOv5 fixtures at {FIXTURES} (a fresh clone has none)")


@pytest.fixture(scope="module", params=list(FIRST_NAMES))
def fixture(request):
    reference = np.load(FIXTURES / f"{request.param}.ref.npz")
    return request.param, FIXTURES / f"{request.param}.pt", {key: reference[key] for key in reference.files}


def _size(reference) -> tuple[int, int]:
    height, width, _ = reference["image"].shape
    return width, height


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_ir_from_convert_equals_the_reference(fixture, tmp_path):
    """`pruneyolo convert X.pt`: decoded IR == `decoded`; raw IR == sigmoid(raw_i) (the head conv is logistic)."""
    name, path, reference = fixture
    width, height = _size(reference)
    for heads in ("decoded", "raw"):
        result = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / heads), "--heads", heads,
                                           "--size", f"{width}x{height}"])
        assert result.exit_code == 0, result.output
        compiled = compile_f32(str(tmp_path / heads / f"{name}.xml"))
        results = compiled(reference["image"][None])
        outputs = [results[output] for output in compiled.outputs]
        expected = [reference["decoded"]] if heads == "decoded" else [_sigmoid(reference[f"raw_{i}"]) for i in range(3)]
        for actual, wanted in zip(outputs, expected, strict=True):
            assert actual.shape == wanted.shape
            assert relative_error(actual, wanted) < BOUND
        del compiled


def test_head_logits_equal_raw_reference(fixture):
    """The imported module's head convs before their logistic equal raw_0..2 themselves."""
    _, path, reference = fixture
    graph, imported = import_checkpoint(path, _size(reference))
    model = build_model(graph, imported.weights)
    for head in graph.heads:
        getattr(model, module_name(graph.nodes[head.inputs[0]])).act = nn.Identity()
    image = reference["image"][:, :, ::-1].transpose(2, 0, 1)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(image)).float()[None] / 255)
    for i, actual in enumerate(logits):
        assert relative_error(actual.numpy(), reference[f"raw_{i}"]) < BOUND


def test_opencv_reads_the_emitted_cfg_with_the_same_heads(fixture, tmp_path):
    name, path, reference = fixture
    graph = write_import(path, tmp_path, _size(reference))[0]
    cv2.setNumThreads(1)
    net = cv2.dnn.readNetFromDarknet(str(tmp_path / f"{name}.cfg"), str(tmp_path / f"{name}.weights"))
    heads = opencv_heads(net, graph, cv2.dnn.blobFromImage(reference["image"], 1 / 255.0, swapRB=True))
    for i, actual in enumerate(heads):
        assert relative_error(actual, _sigmoid(reference[f"raw_{i}"])) < BOUND


def test_structure_names_and_parameters_come_from_the_checkpoint(fixture):
    name, path, reference = fixture
    graph, imported = import_checkpoint(path, _size(reference))
    layers = load_checkpoint(path).model.child("model").children.values()
    assert graph.params == sum(layer.attrs["np"] for layer in layers)
    assert imported.names[0] == FIRST_NAMES[name] and len(imported.names) == graph.heads[0].classes
    anchors = [anchor for head in graph.heads for anchor in head.head_anchors]
    np.testing.assert_array_equal(np.array(anchors), reference["anchors_px"].reshape(-1, 2))
    assert [head.stride for head in graph.heads] == reference["strides"].tolist()
