"""Export targets: a format added from this file alone is written by `convert --format`, the table's inputs,
storages and heads refuse what a target does not take before anything is converted, and a convert reads its
checkpoint once."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch
import yolov5_support as y5
from click.testing import CliRunner

from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.export import targets

DEMO = Path(__file__).parents[1] / "cfgs" / "demo-tiny.cfg"


def write_card(exported: targets.Exported, directory: Path) -> list[Path]:
    """A model card: the metadata the IR carries, and its outputs' shapes, as JSON."""
    info = ModelInfo.read(exported.model)
    path = Path(directory) / f"{exported.stem}.card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = [list(output.get_partial_shape().to_shape()) for output in exported.model.outputs]
    card = {"labels": info.labels, "input": [info.input_width, info.input_height], "heads": info.heads_mode,
            "storage": exported.storage, "outputs": outputs}
    path.write_text(json.dumps(card))
    return [path]


@pytest.fixture
def card(monkeypatch):
    target = targets.ExportTarget("card", "<stem>.card.json", {"cfg": (("fp32",), ("decoded", "raw"))},
                                  "the card itself", write_card)
    monkeypatch.setitem(targets.TARGETS, "card", target)


def convert(*args):
    return CliRunner().invoke(main, ["convert", str(DEMO), *map(str, args)])


def test_a_registered_target_is_written_by_convert(card, demo_weights, tmp_path):
    done = convert("--weights", demo_weights, "-o", tmp_path, "--format", "card", "--heads", "raw", "--size", "64")
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-tiny.card.json"]  # the card alone, no IR
    card = json.loads((tmp_path / "demo-tiny.card.json").read_text())
    graph = load_graph(DEMO, (64, 64))
    assert card == {"labels": [f"class_{i}" for i in range(graph.heads[0].classes)], "input": [64, 64],
                    "heads": "raw", "storage": "fp32", "outputs": [[1, *head.out_shape] for head in graph.heads]}
    both = convert("--weights", demo_weights, "-o", tmp_path / "both", "--format", "ir", "--format", "card",
                   "--size", "64")
    assert both.exit_code == 0, both.output
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["demo-tiny.bin", "demo-tiny.card.json",
                                                                     "demo-tiny.xml"]


@pytest.mark.parametrize(("extra", "words"), [
    (["--storage", "fp16"], "--storage fp16 does not apply to format card from a Darknet cfg (it takes fp32)"),
    (["--heads", "scores"], "--heads scores does not apply to format card from a Darknet cfg (it takes decoded, raw)"),
    (["--ovms-device", "GPU"], "--ovms-device is only used by format ovms; write that format too"),
])
def test_the_table_refuses_what_a_target_does_not_take(card, demo_weights, tmp_path, extra, words):
    done = convert("--weights", demo_weights, "-o", tmp_path / "out", "--format", "card", *extra)
    assert done.exit_code == 2 and done.output.strip().splitlines() == [f"error: {words}"], done.output
    assert not (tmp_path / "out").exists()


def test_formats_and_their_old_spellings(demo_weights, tmp_path):
    unknown = convert("--weights", demo_weights, "-o", tmp_path, "--format", "tflite")
    assert unknown.exit_code == 2 and "'tflite': choose from ir, onnx, ovms" in unknown.output
    nowhere = convert("--weights", demo_weights, "--format", "onnx")
    assert nowhere.exit_code == 2 and "--format onnx writes into -o DIR" in nowhere.output
    alias = convert("--weights", demo_weights, "-o", tmp_path / "a", "--onnx", "--ovms", tmp_path / "repo",
                    "--size", "64")
    assert alias.exit_code == 0, alias.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["demo-tiny.bin", "demo-tiny.onnx", "demo-tiny.xml"]
    assert (tmp_path / "repo" / "demo-tiny" / "1" / "model.xml").is_file()


def test_a_checkpoint_is_read_once_per_convert(tmp_path):
    checkpoint = tmp_path / "m.pt"
    torch.save({"model": y5.randomize(y5.v5_layout(np.random.default_rng(3)), 3)}, checkpoint)
    opened = []
    listening = [True]

    def count_opens(event, args):
        if listening[0] and event == "open" and str(args[0]) == str(checkpoint):
            opened.append(args[1])

    sys.addaudithook(count_opens)  # hooks stay for the process: this one stops listening below
    try:
        done = CliRunner().invoke(main, ["convert", str(checkpoint), "-o", str(tmp_path / "ir"), "--size", "64"])
    finally:
        listening[0] = False
    assert done.exit_code == 0, done.output
    assert len(opened) == 1
    info = ModelInfo.read(ov.Core().read_model(str(tmp_path / "ir" / "m.xml")))
    assert info.cfg_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
