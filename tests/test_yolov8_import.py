"""YOLOv8 / YOLO11 checkpoints built in-test (tests/yolov8_support.py, no Ultralytics): imported layer by layer,
their raw maps and decoded rows equal the models' own; hostile attributes refused in one line."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
import yolov8_support as y8
from click.testing import CliRunner
from support import compile_f32, relative_error

from pruneyolo.cli.main import main
from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import build_graph
from pruneyolo.detect.decode import decode_raw, rows_from_scores
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.errors import CfgError
from pruneyolo.nn.build import DecodedModel, ScoresModel, build_model
from pruneyolo.yolov5.source import import_checkpoint

SIZE = (64, 64)
BOUND = 1e-4
CPU_SECONDS = 10  # of this process's CPU time: wall time on a shared, loaded machine says little


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255


@pytest.fixture(scope="module", params=["v11", "pruned_v8"])
def saved(request, tmp_path_factory):
    model = y8.randomize(y8.v11_layout() if request.param == "v11" else y8.pruned_v8_layout(), 5)
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}.pt"
    torch.save({"model": copy.deepcopy(model).half() if request.param == "v11" else model, "ema": None}, path)
    return path, model.half().float() if request.param == "v11" else model


def test_imported_module_equals_the_model(saved):
    path, model = saved
    image = _image()
    raws, decoded = y8.reference(model, image)
    graph, imported = import_checkpoint(path, SIZE)
    module = build_model(graph, imported.weights)
    with torch.no_grad():
        actual = module(_tensor(image))
        scores = ScoresModel(DecodedModel(module, graph))(_tensor(image))
    for mine, theirs in zip(actual, raws, strict=True):
        assert relative_error(mine.numpy(), theirs) < BOUND
    assert scores.shape == decoded.shape and relative_error(scores.numpy(), decoded) < BOUND
    rows = decode_raw([raw for raw in raws], ModelInfo.from_graph(graph, imported.names, "raw"))
    assert relative_error(rows, rows_from_scores(decoded)) < BOUND
    assert graph.params == sum(p.numel() for p in model.parameters()) - model.model[-1].reg_max


def test_cfg_uses_darknet_vocabulary_where_exact(saved):
    path, model = saved
    graph, imported = import_checkpoint(path, SIZE)
    text = imported.cfg_text
    assert "groups=2\ngroup_id=1" in text and "[shortcut]" in text and "[maxpool]\nsize=5" in text
    assert text.count("\n[detect]\n") == 2 and "reg_max=16" in text
    assert text.count("\n[attention]\n") == (1 if "v11" in path.name else 0)
    if "v11" in path.name:
        assert "heads=2\nkey_dim=4" in text
    classes = model.model[-1].nc
    assert [(head.kind, head.out_channels, head.stride) for head in graph.heads] == [
        ("detect", 64 + classes, 8), ("detect", 64 + classes, 16)]


def test_convert_gives_the_decoded_layout_at_f32(saved, tmp_path):
    path, model = saved
    image = _image(1)
    _, decoded = y8.reference(model, image)
    result = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path), "--heads", "scores", "--size", "64"])
    assert result.exit_code == 0, result.output
    compiled = compile_f32(str(tmp_path / f"{path.stem}.xml"))
    assert relative_error(compiled(image[None])[compiled.outputs[0]], decoded) < 1e-3


def test_import_command_writes_cfg_weights_names(saved, tmp_path):
    path, _ = saved
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{path.stem}.names").read_text().splitlines()[0] in ("kind0", "0")
    assert "detect" in result.output and (tmp_path / f"{path.stem}.weights").stat().st_size > 0


def _save(tmp_path, name, change, layout=y8.v11_layout):
    model = y8.randomize(layout(), 1)
    change(model)
    path = tmp_path / f"{name}.pt"
    torch.save({"model": model}, path)
    return path


def _stride(model, values):
    model.stride = model.model[-1].stride = torch.tensor(values)


def _shared_dag(model):
    """Every level holds the one below twice: 2**40 modules reachable through 40 objects."""
    block = torch.nn.ReLU()
    for _ in range(40):
        block = torch.nn.Sequential(block, block)
    model.model[2].add_module("shared", block)


HOSTILE = {
    "stride-0": (lambda m: _stride(m, [0.0, 16.0]), "strides [0.0, 16.0]"),
    "stride-mismatch": (lambda m: _stride(m, [8.0, 32.0]), "do not match the imported heads' (8, 16)"),
    "reg-max-0": (lambda m: setattr(m.model[-1], "reg_max", 0), "reg_max=0, where YOLOv5 has an integer from 2 to 64"),
    "reg-max-huge": (lambda m: setattr(m.model[-1], "reg_max", 10**9), "reg_max=1000000000"),
    "reg-max-mismatch": (lambda m: setattr(m.model[-1], "reg_max", 8), "dfl: its conv is not the fixed arange(8)"),
    "split-too-large": (lambda m: setattr(m.model[4], "cv1_split_sections", [9, 400]),
                        "cv1_split_sections=400, where YOLOv5 has an integer from 1 to 23"),
    "split-mismatch": (lambda m: setattr(m.model[4], "cv1_split_sections", [9, 9]),
                       "cv1_split_sections 9+9 does not match cv1's 23 channels"),
    "heads-not-dividing": (lambda m: setattr(m.model[7].m[0].attn, "num_heads", 3),
                           "3 heads x head_dim 8 (key_dim 4) do not divide its 16 channels"),
    "dag": (_shared_dag, "more than 100000 modules"),
}
LAYOUT = {"split-too-large": y8.pruned_v8_layout, "split-mismatch": y8.pruned_v8_layout}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_attribute_is_refused_in_one_line(name, tmp_path):
    change, words = HOSTILE[name]
    path = _save(tmp_path, name, change, LAYOUT.get(name, y8.v11_layout))
    started = time.process_time()
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out"), "--size", "64"])
    elapsed = time.process_time() - started
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and words in lines[0], lines
    assert not (tmp_path / "out").exists()
    assert elapsed < CPU_SECONDS, f"{name} took {elapsed:.1f} s"


@pytest.mark.parametrize(("section", "words"), [
    ("[detect]\nclasses=3\nreg_max=1", "reg_max=1 must be in 2..64"),
    ("[detect]\nclasses=4\nreg_max=16", "needs 68"),
    ("[attention]\nheads=3\nkey_dim=4", "not a positive multiple of heads=3"),
])
def test_new_sections_check_their_options(section, words):
    text = f"[net]\nwidth=32\nheight=32\n\n[convolutional]\nfilters=67\nsize=1\nstride=8\n\n{section}\n"
    with pytest.raises(CfgError, match=words):
        build_graph(parse_cfg_text(text, "x.cfg"), "x.cfg")
