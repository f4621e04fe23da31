"""Codegen and convert: the generated file equals the in-process module; IR heads, decode, FP16, 2022.3, ONNX."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime
import openvino as ov
import pytest
import torch
from cfg_sources import CORPUS, HAS_CORPUS, OWN_CFGS, corpus_cfg, own_cfg, shipped_cfg, with_corpus
from click.testing import CliRunner
from fixtures import random_weights, spike_and_slab
from ov2022 import infer_2022_many
from support import compile_f32, load_generated, opencv_heads, opencv_net, random_bgr, relative_error, to_blob

from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import part_sizes, write_weights
from pruneyolo.detect.decode import decode_raw
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.export.build import IrOptions, build_ir
from pruneyolo.export.convert import export_module, save_ir, save_onnx
from pruneyolo.nn.build import build_model, export_weights
from pruneyolo.nn.layers import ConvBlock
from pruneyolo.prune.pruning import prune

VARIETY = [pytest.param(path, id=path.stem) for path in OWN_CFGS] + [  # ours, then one corpus cfg per feature
    with_corpus(corpus_cfg("yolov4-tiny"), id="yolov4-tiny"),  # route groups, scale_x_y
    with_corpus(corpus_cfg("yolov2"), id="yolov2"),  # [reorg] (old), [region]
    with_corpus(corpus_cfg("enet-coco"), id="enet"),  # [avgpool], [scale_channels], grouped convs
    with_corpus(corpus_cfg("yolov4-sam-mish-csp-reorg-bfm"), id="sam-reorg3d"),  # [sam], [reorg3d], mish
    with_corpus(CORPUS / "ZJU-lishuang__yolov5_prune__cfg__yolov5s.cfg", id="yolov5-focus"),  # [focus] ...
    with_corpus(CORPUS / "ZJU-lishuang__yolov5_prune__cfg__yolo-fastest.cfg", id="yolo-fastest"),  # depthwise
]


def _model(path, size=(128, 128), seed=0):
    graph = load_graph(path, size)
    return graph, random_weights(graph, seed)


@pytest.mark.parametrize("cfg", VARIETY)
def test_generated_file_equals_in_process_module_and_passes_ruff(cfg, tmp_path):
    graph, weights = _model(cfg)
    weights_path = tmp_path / "m.weights"
    write_weights(weights_path, graph, weights)
    generated = load_generated(graph, tmp_path / "generated.py").load_darknet_weights(weights_path)
    in_process = build_model(graph, weights)
    image = torch.rand(1, *graph.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for ours, theirs in zip(generated(image), in_process(image), strict=True):
            assert torch.equal(ours, theirs)
    assert set(generated.state_dict()) == set(in_process.state_dict())
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated",
                           str(tmp_path / "generated.py")], check=False, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_codegen_cli_on_the_shipped_pruned_cfg_runs_standalone(tmp_path):
    cfg = shipped_cfg("yolov4-tiny_prune_0.88")
    graph = load_graph(cfg)
    weights_path = tmp_path / "p.weights"
    write_weights(weights_path, graph, random_weights(graph, 1))
    output = tmp_path / "prune088.py"
    result = CliRunner().invoke(main, ["codegen", str(cfg), "-o", str(output), "--weights", str(weights_path)])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert "import pruneyolo" not in text and "from pruneyolo" not in text
    assert "self.conv0 = ConvBlock(" in text and "# 13x13x255" in text
    run = subprocess.run([sys.executable, str(output)], check=False, capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    heads = [head.out_shape for head in graph.heads]
    assert run.stdout.split("\n")[:2] == [f"head {i}: (1, {c}, {h}, {w})" for i, (c, h, w) in enumerate(heads)]


@pytest.mark.parametrize("cfg, decode", [
    pytest.param(shipped_cfg("demo-tiny"), "darknet", id="darknet"),
    pytest.param(own_cfg("csp-newcoords"), "new_coords", id="new_coords"),
    pytest.param(own_cfg("yolov5-dialect"), "yolov5", id="yolov5"),
    pytest.param(own_cfg("region-reorg"), "region", id="region"),
    with_corpus(corpus_cfg("yolov4-tiny"), "darknet", id="yolov4-tiny"),
    with_corpus(corpus_cfg("yolov4-csp"), "new_coords", id="yolov4-csp"),
    with_corpus(CORPUS / "ZJU-lishuang__yolov5_prune__cfg__yolov5s_v4.cfg", "yolov5", id="yolov5s_v4"),
    with_corpus(corpus_cfg("yolov2-tiny"), "region", id="yolov2-tiny"),
])
def test_decoded_and_scores_heads_equal_numpy_decode_of_raw_heads(cfg, decode, tmp_path):
    graph, weights = _model(cfg, (160, 128))
    assert {head.decode for head in graph.heads} == {decode}
    frame = random_bgr(graph)
    raw_model = build_ir(graph, weights, IrOptions("raw")).model
    raw = compile_f32(raw_model)(frame)
    decoded = compile_f32(build_ir(graph, weights).model)(frame)[0][0]
    info = ModelInfo.read(raw_model)
    expected = decode_raw([raw[i] for i in range(len(graph.heads))], info)
    assert decoded.shape == expected.shape == (sum(len(h.mask) * h.out_shape[1] * h.out_shape[2]
                                                  for h in graph.heads), 5 + graph.heads[0].classes)
    assert np.allclose(decoded, expected, rtol=1e-4, atol=1e-3 * max(1.0, np.abs(expected).max()))
    scores = compile_f32(build_ir(graph, weights, IrOptions("scores")).model)(frame)[0][0]
    boxes_scores = np.concatenate([expected[:, :4], expected[:, 5:] * expected[:, 4:5]], 1).T
    assert np.allclose(scores, boxes_scores, rtol=1e-4, atol=1e-3 * max(1.0, np.abs(expected).max()))


def test_metadata_input_and_names(tmp_path):
    graph, weights = _model(own_cfg("tiny-maxpool"), (192, 160))
    labels = [f"thing {i}" for i in range(3)]
    model = build_ir(graph, weights, IrOptions(labels=labels)).model
    xml = save_ir(model, tmp_path / "m.xml")
    loaded = ov.Core().read_model(xml)
    assert loaded.inputs[0].get_element_type() == ov.Type.u8
    assert list(loaded.inputs[0].get_shape()) == [1, 160, 192, 3]
    info = ModelInfo.read(loaded)
    assert info.labels == labels and info.heads_mode == "decoded"
    assert [h.stride for h in info.heads] == [32, 16]
    assert info.heads[0].anchors == [[41, 52], [75, 60], [120, 130]]
    assert "model_type" not in loaded.get_rt_info()["model_info"]  # no model_api wrapper parses [1, N, 5+C]
    assert loaded.get_rt_info(["model_info", "labels"]).astype(str).split()[0] == "thing_0"
    assert [output.get_any_name() for output in loaded.outputs] == ["detections"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("cfg", [pytest.param(own_cfg("csp-newcoords"), id="csp-newcoords"),
                                 with_corpus(corpus_cfg("yolov4-csp"), id="yolov4-csp")])
def test_fp16_ir_within_1e2_of_fp32(cfg, tmp_path):
    graph, weights = _model(cfg, (128, 128))
    model = build_ir(graph, weights, IrOptions("raw")).model
    frame = random_bgr(graph)
    results = {}
    for storage in ("fp32", "fp16"):
        xml = save_ir(model, tmp_path / storage / "m.xml", storage)
        compiled = compile_f32(xml)
        results[storage] = [compiled(frame)[i] for i in range(len(graph.heads))]
    assert (tmp_path / "fp16" / "m.bin").stat().st_size < 0.6 * (tmp_path / "fp32" / "m.bin").stat().st_size
    errors = [relative_error(a, b) for a, b in zip(results["fp16"], results["fp32"], strict=True)]
    assert max(errors) < 1e-2 and max(errors) > 0, errors


FP16_2022 = [*OWN_CFGS, shipped_cfg("demo-tiny")] + ([corpus_cfg(name) for name in ("yolov4-tiny", "yolov4-csp-swish",
                                                                                 "yolov3-spp")] if HAS_CORPUS else [])


def test_fp16_irs_load_and_match_in_openvino_2022_3(tmp_path):
    """Every cfg's FP16 IR, all run in one OpenVINO 2022.3 process."""
    jobs, expected = [], []
    for cfg in FP16_2022:
        graph, weights = _model(cfg, (128, 128))
        xml = save_ir(build_ir(graph, weights, IrOptions("raw")).model, tmp_path / cfg.stem / "m.xml", "fp16")
        frame = random_bgr(graph)
        compiled = compile_f32(xml)
        jobs.append((xml, [frame]))
        expected.append([compiled(frame)[i] for i in range(len(graph.heads))])
    for cfg, outputs, heads in zip(FP16_2022, infer_2022_many(jobs), expected, strict=True):
        errors = [relative_error(a, b) for a, b in zip(outputs, heads, strict=True)]
        assert len(outputs) == len(heads) and max(errors) < 1e-2, (cfg.stem, errors)


@pytest.mark.parametrize("cfg", [pytest.param(shipped_cfg("demo-tiny"), id="demo-tiny"),
                                 with_corpus(corpus_cfg("yolov4-tiny"), id="yolov4-tiny")])
def test_onnx_runs_in_onnxruntime_with_parity(cfg, tmp_path):
    graph, weights = _model(cfg, (160, 160))
    path = save_onnx(export_module(graph, weights, "raw"), graph, tmp_path / "m.onnx", "raw")
    blob = to_blob(random_bgr(graph))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"image": blob})
    with torch.no_grad():
        expected = [head.numpy() for head in build_model(graph, weights)(torch.from_numpy(blob))]
    assert max(relative_error(a, b) for a, b in zip(outputs, expected, strict=True)) < 1e-3


def test_convert_cli_writes_ir_and_onnx_and_refuses_wrong_weights(tmp_path):
    cfg = own_cfg("tiny-maxpool")
    graph, weights = _model(cfg, (416, 416))
    weights_path = tmp_path / "m.weights"
    write_weights(weights_path, graph, weights)
    out = tmp_path / "ir"
    result = CliRunner().invoke(main, ["convert", str(cfg), "--weights", str(weights_path), "-o", str(out),
                                       "--onnx", "--storage", "fp16"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{cfg.stem}.{ext}" for ext in ("bin", "onnx", "xml")]
    other = shipped_cfg("demo-tiny")
    bad = CliRunner().invoke(main, ["convert", str(other), "--weights", str(weights_path), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "the cfg needs" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())


@pytest.mark.parametrize("cfg", [pytest.param(own_cfg("res-spp"), id="res-spp"),
                                 with_corpus(corpus_cfg("yolov3-spp"), id="yolov3-spp")])
def test_pruned_model_round_trip_converts_with_parity(cfg, tmp_path):
    graph = load_graph(cfg, (128, 128))
    result = prune(graph, random_weights(graph, 2, gamma=spike_and_slab), 0.8, shortcuts=4)
    pruned = result.graph
    assert pruned.params < 0.4 * graph.params and len(pruned.nodes) == len(graph.nodes) - 12
    frame = random_bgr(pruned)
    compiled = compile_f32(build_ir(pruned, result.weights, IrOptions("raw")).model)
    heads = [compiled(frame)[i] for i in range(len(pruned.heads))]
    reference = opencv_heads(opencv_net(pruned, result.weights, tmp_path / "pruned"), pruned, to_blob(frame))
    assert max(relative_error(a, b) for a, b in zip(heads, reference, strict=True)) < 1e-3


LAYOUT_CFG = """[net]
width=32
height=32
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[convolutional]
filters=6
size=1
stride=1
pad=1
activation=linear
[convolutional_nobias]
filters=5
size=3
stride=2
pad=1
activation=SiLU
[convolutional_noconv]
filters=5
activation=SiLU
"""


def test_weights_layout_is_one_description_for_files_and_modules(tmp_path, monkeypatch):
    path = tmp_path / "layout.cfg"
    path.write_text(LAYOUT_CFG)
    graph = load_graph(path)
    weights = random_weights(graph, seed=3)
    exported = export_weights(build_model(graph, weights), graph)
    for conv in graph.weighted_convs:
        for name, _ in part_sizes(conv):
            assert np.array_equal(getattr(exported.layers[conv.index], name), getattr(weights.layers[conv.index], name))
    monkeypatch.setattr(ConvBlock, "darknet_tensors", lambda block: [block.bn.bias] if block.bn is not None else [])
    with pytest.raises(ValueError):
        build_model(graph, weights)
