"""The Python face: docs/python.md's example runs as written, `load` takes every model kind modelfile knows,
and library errors name parameters, not CLI options."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pruneyolo
from pruneyolo.darknet.summary import format_summary
from pruneyolo.errors import ArgumentError, PruneyoloError

ROOT = Path(__file__).parents[1]
SHIPPED = ROOT / "cfgs" / "prune_0.88.cfg", ROOT / "cfgs" / "prune_0.88.weights"


def docs_example() -> str:
    """The one ```python block of docs/python.md."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


def test_the_docs_example_runs_as_written():
    example = docs_example()
    assert len(example.splitlines()) <= 16
    done = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    *summary, params, run = done.stdout.splitlines()
    shipped = pruneyolo.load(*SHIPPED).graph
    assert summary[0].endswith("cfgs/prune_0.88.cfg") and summary[1:] == format_summary(shipped).splitlines()[1:]
    before, after = (int(n.replace(",", "")) for n in re.fullmatch(r"parameters ([\d,]+) -> ([\d,]+)", params).groups())
    assert before == shipped.params and 0 < after < before
    assert re.fullmatch(r"4 frames, \d+ detections", run)


def test_public_names_and_a_light_import():
    assert set(pruneyolo.__all__) == {"ArgumentError", "CfgError", "Model", "PruneyoloError", "WeightsError",
                                      "__version__", "load", "run"}
    assert all(getattr(pruneyolo, name) is not None for name in pruneyolo.__all__)
    code = "import sys, pruneyolo; print(sorted({'torch', 'openvino', 'cv2'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "[]"


def test_load_takes_every_kind_and_the_ir_knows_its_tensors(tmp_path):
    model = pruneyolo.load(*SHIPPED, size=(128, 96))
    assert model.kind == "cfg" and model.graph.input_shape == (3, 96, 128) and model.weights is not None
    assert model.summary(as_json=True)["input_shape"] == [3, 96, 128]
    xml = model.convert(tmp_path, heads="raw")[0]
    assert xml == tmp_path / "prune_0.88.xml" and xml.with_suffix(".bin").is_file()
    ir = pruneyolo.load(xml)
    assert ir.kind == "ir" and ir.graph is None
    assert ir.summary().splitlines() == [f"{xml}: OpenVINO IR", "input  image UINT8 [1, 96, 128, 3]", *(
        f"output head{i} FP32 [1, 30, {h.out_shape[1]}, {h.out_shape[2]}]" for i, h in enumerate(model.graph.heads))]
    assert [h.out_shape[1:] for h in model.graph.heads] == [(12, 16), (6, 8), (3, 4)]
    with pytest.raises(PruneyoloError, match="an OpenVINO IR has no graph to prune; load the cfg"):
        ir.prune(0.5)


def test_a_pruned_model_saves_as_cfg_and_weights_that_load_back(tmp_path):
    pruned = pruneyolo.load(*SHIPPED).prune(0.3, layer_keep=0.1)
    cfg, weights = pruned.save(tmp_path)
    assert (cfg.name, weights.name) == ("prune_0.3_prune_0.88.cfg", "prune_0.3_prune_0.88.weights")
    again = pruneyolo.load(cfg, weights)
    assert again.graph.params == pruned.graph.params
    assert [layer.weights.shape for layer in again.weights.layers.values() if layer.weights is not None] == [
        layer.weights.shape for layer in pruned.weights.layers.values() if layer.weights is not None]


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.prune(1.5), "percent 1.5 must be in [0, 1)"),
    (lambda m: m.prune(0.5, layer_keep=2.0), "layer_keep 2 must be in [0, 1]"),
    (lambda m: m.prune(0.5, round_to=0), "round_to 0 must be >= 1"),
    (lambda m: m.prune(0.5, shortcuts=-1), "shortcuts -1 must be >= 0"),
])
def test_library_errors_name_parameters(call, message):
    with pytest.raises(ArgumentError) as caught:
        call(pruneyolo.load(*SHIPPED))
    assert str(caught.value) == message


def test_a_percent_that_empties_a_layer_suggests_the_parameter_by_its_name():
    with pytest.raises(ArgumentError) as caught:
        pruneyolo.load(*SHIPPED).prune(0.99)
    assert str(caught.value).startswith("percent 0.99 (threshold |gamma| ")
    assert "or give layer_keep K to let every layer keep" in str(caught.value)
    assert "or give --layer-keep K" in caught.value.naming(lambda name: "--" + name.replace("_", "-"))


def test_wrong_arguments_for_a_kind_are_refused_in_one_line(tmp_path):
    with pytest.raises(ArgumentError, match=r"^weights missing: converting .*prune_0.88.cfg needs them"):
        pruneyolo.load(SHIPPED[0]).convert(tmp_path)
    with pytest.raises(ArgumentError, match="^model .*prune_0.88.cfg: a Darknet cfg; run takes an OpenVINO IR"):
        pruneyolo.run(SHIPPED[0], ["synthetic:seed=0"])
