"""The rest of the pipeline on imported YOLOv5 models: pruning (ties, exactness), the new_coords training loss,
train --sparsity and eval from a checkpoint, and YOLOv5 export.py-style ONNX wrapped for `pruneyolo run`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import openvino as ov
import pytest
import torch
import yolov5_support as y5
from click.testing import CliRunner
from fixtures import spike_and_slab
from prune_support import zero_cut_channels
from support import compile_f32, relative_error

from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import Shortcut
from pruneyolo.darknet.weights import read_weights
from pruneyolo.data.synth import make_dataset
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.nn.build import build_model
from pruneyolo.prune.pruning import channel_masks, node_masks, prune
from pruneyolo.train.loss import HeadGeometry, yolo_loss
from pruneyolo.yolov5.source import import_checkpoint

SIZE = (96, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def _sparse_checkpoint(path, classes=3, seed=5):
    """A v5-style pruned model whose BatchNorm gammas look sparsity-trained, saved as the tools save it."""
    rng = np.random.default_rng(seed)
    model = y5.randomize(y5.v5_layout(rng, classes=classes), seed,
                         gamma=lambda count, _: torch.from_numpy(spike_and_slab(rng, count, 0.5)))
    torch.save({"model": model}, path)
    return model


def test_prune_keeps_residual_channels_tied_and_is_exact_with_dead_channels(tmp_path):
    _sparse_checkpoint(tmp_path / "m.pt")
    graph, imported = import_checkpoint(tmp_path / "m.pt", SIZE)
    weights = imported.weights
    masks, _, _ = channel_masks(graph, weights, 0.5)
    kept = node_masks(graph, masks)
    shortcuts = [node for node in graph.nodes if isinstance(node, Shortcut)]
    assert len(shortcuts) == 3
    for node in shortcuts:
        assert np.array_equal(kept[node.inputs[0]], kept[node.inputs[1]])
    assert any(not kept[node.index].all() for node in shortcuts)  # the tied groups are pruned too
    assert all(masks[head.inputs[0]].all() for head in graph.heads)
    zero_cut_channels(weights, masks)
    result = prune(graph, weights, 0.5)
    assert result.graph.params < 0.8 * graph.params
    x = torch.rand(1, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = build_model(graph, weights)(x)
        after = build_model(result.graph, result.weights)(x)
    for a, b in zip(after, before, strict=True):
        assert a.shape == b.shape and relative_error(a.numpy(), b.numpy()) < 1e-5


def test_new_coords_loss_decodes_probabilities_like_yolov5():
    """Outputs of 0.5 put a new_coords box exactly on its cell centre with the anchor's size."""
    outputs = [torch.full((1, 7, 4, 4), 0.5)]
    targets = torch.tensor([[0, 1, 12.0, 20.0, 16.0, 16.0]])  # cell (1, 2) of a stride-8 grid, anchor-sized
    anchors = torch.tensor([[16.0, 16.0]])
    new_coords = HeadGeometry(anchors, (8.0, 8.0), 2.0, 1.0, "new_coords")
    darknet = HeadGeometry(anchors, (8.0, 8.0), 2.0, 1.0, "darknet")
    _, parts = yolo_loss(outputs, targets, [new_coords])
    _, as_logits = yolo_loss(outputs, targets, [darknet])
    assert parts["box"] < 1e-6
    assert as_logits["box"] > 0.01
    assert parts["cls"] == pytest.approx(np.log(2), rel=1e-5)  # BCE of probability 0.5 for both classes


def test_train_with_sparsity_and_eval_take_a_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "shapes", train=4, val=0, test=2, size=64, seed=3)
    _sparse_checkpoint(tmp_path / "pruned.pt", classes=5)
    runner = CliRunner()
    trained = runner.invoke(main, ["train", str(tmp_path / "pruned.pt"), "--data", str(data), "-o",
                                   str(tmp_path / "run"), "--epochs", "1", "--batch", "2", "--limit", "4", "--size",
                                   "64", "--sparsity", "0.01", "--threads", "1", "--no-ema", "--no-augment"])
    assert trained.exit_code == 0, trained.output
    graph, imported = import_checkpoint(tmp_path / "pruned.pt", (64, 64))
    tuned = read_weights(tmp_path / "run/pruned.weights", graph)  # the written cfg's weights, changed by training
    assert (tmp_path / "run/pruned.cfg").is_file() and (tmp_path / "run/pruned.names").is_file()
    assert any(not np.array_equal(tuned.layers[i].weights, imported.weights.layers[i].weights)
               for i in imported.weights.layers)
    assert (tmp_path / "run/gammas/epoch_001.png").is_file()
    for model in (["eval", str(tmp_path / "pruned.pt")],
                  ["eval", str(tmp_path / "run/pruned.cfg"), "--weights", str(tmp_path / "run/pruned.weights")]):
        scored = runner.invoke(main, [*model, "--data", str(data), "--size", "64"])
        assert scored.exit_code == 0 and "mAP50" in scored.output, scored.output
    into_itself = runner.invoke(main, ["train", str(tmp_path / "pruned.pt"), "--data", str(data), "-o",
                                       str(tmp_path)])
    assert into_itself.exit_code == 2 and "overwrite the checkpoint" in into_itself.output


# --- ONNX ----------------------------------------------------------------------------------------------------

def _export(module, path, output_names, names=None, dynamic=False):
    """torch.onnx.export as YOLOv5's export.py calls it (opset 12, input 'images'), metadata names optional."""
    module.eval()  # export restores the wrapper's mode to every submodule: train mode would leak into the model
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, SIZE[1], SIZE[0]),), str(path), opset_version=12,
                          input_names=["images"], output_names=output_names, dynamo=False,
                          dynamic_axes={"images": {2: "height", 3: "width"}} if dynamic else None)
    if names is not None:
        proto = onnx.load(str(path))
        proto.metadata_props.add(key="stride", value="16")
        proto.metadata_props.add(key="names", value=str(dict(enumerate(names))))
        onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("onnx")
    model = y5.randomize(y5.v5_layout(np.random.default_rng(7)), 7)
    path = _export(y5.ExportModel(model), directory / "best.onnx", ["output0"], names=["cat", "dog", "bird"])
    return model, path


def test_yolov5_onnx_is_wrapped_with_preprocessing_and_metadata(exported, tmp_path):
    model, path = exported
    result = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    xml = tmp_path / "best.xml"
    info = ModelInfo.read(ov.Core().read_model(str(xml)))
    assert info.labels == ["cat", "dog", "bird"] and (info.input_width, info.input_height) == SIZE
    assert [head.stride for head in info.heads] == [8, 16] and info.heads_mode == "decoded"
    image = np.random.default_rng(3).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    _, decoded = y5.reference(model, image)
    compiled = compile_f32(str(xml))
    actual = compiled(image[None])[compiled.outputs[0]]
    assert compiled.outputs[0].get_names() >= {"detections"}
    assert actual.shape == decoded.shape and relative_error(actual, decoded) < 1e-3
    del compiled
    names = tmp_path / "mine.names"
    names.write_text("a\nb\nc\n")
    renamed = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "n"), "--names", str(names)])
    assert renamed.exit_code == 0
    assert ModelInfo.read(ov.Core().read_model(str(tmp_path / "n/best.xml"))).labels == ["a", "b", "c"]


def test_pruneyolo_run_takes_the_wrapped_onnx(exported, tmp_path):
    _, path = exported
    assert CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path)]).exit_code == 0
    jsonl = tmp_path / "run.jsonl"
    result = CliRunner().invoke(main, ["run", str(tmp_path / "best.xml"), "--source", "synthetic:seed=1,size=96x64",
                                       "--max-frames", "3", "--jsonl", str(jsonl), "--quiet", "--conf", "0.01"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 3


def test_dynamic_onnx_takes_its_size_from_size(tmp_path):
    model = y5.randomize(y5.v5_layout(np.random.default_rng(8)), 8)
    path = _export(y5.ExportModel(model), tmp_path / "dyn.onnx", ["output0"], dynamic=True)
    result = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path), "--size", "64x32"])
    assert result.exit_code == 0, result.output
    info = ModelInfo.read(ov.Core().read_model(str(tmp_path / "dyn.xml")))
    assert (info.input_width, info.input_height) == (64, 32) and info.labels == ["class_0", "class_1", "class_2"]


def test_onnx_not_in_export_form_is_refused_in_one_line(tmp_path):
    model = y5.randomize(y5.v5_layout(np.random.default_rng(9)), 9)
    raw = _export(model, tmp_path / "raw.onnx", ["p3", "p4"])
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"\x00\x01 not a protobuf")
    cases = [(raw, [], "decoded boxes [1, N, 5+C]"), (not_onnx, [], "cannot read the ONNX"),
             (raw, ["--heads", "raw"], "--heads raw does not apply"), (raw, ["--weights", "w"], "--weights does not"),
             (raw, ["--heads", "scores"], "--heads scores does not apply"),
             (raw, ["--storage", "int8", "--calib", "synthetic"], "--storage int8 does not apply"),
             (raw, ["--size", "64x32"], "--size 64x32: "), (raw, ["--size", "64x32"], "exported at a fixed")]
    for path, extra, words in cases:
        result = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "out"), *extra])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and words in lines[0], result.output
        assert not (tmp_path / "out").exists()
