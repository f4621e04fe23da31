"""INT8 by NNCF: quantized ops outside the head decode and none inside, outputs near FP32, calibration errors,
and the OpenVINO Model Server repository written by `convert --ovms`."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
from click.testing import CliRunner
from fixtures import random_weights

from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import write_weights
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.build import build_ir
from pruneyolo.export.convert import save_ir
from pruneyolo.export.ovms import model_config, model_name, read_config, with_model
from pruneyolo.export.quantize import (
    calib_images,
    decode_ops,
    input_size,
    quantize_model,
    read_calib_image,
    synthetic_calib,
)

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "cfgs" / "demo-tiny.cfg"
SIZE = (128, 128)
CALIB = 12
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], terminal_width=160)


@pytest.fixture(scope="module")
def models():
    """demo-tiny at 128x128 with random weights: (graph, fp32 model, int8 model)."""
    graph = load_graph(DEMO, SIZE)
    model = build_ir(graph, random_weights(graph, 0)).model
    return graph, model, quantize_model(model, synthetic_calib(model, CALIB), CALIB)


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """demo-tiny .weights (random) on disk, for the CLI."""
    graph = load_graph(DEMO)
    path = tmp_path_factory.mktemp("demo") / "demo-tiny.weights"
    write_weights(path, graph, random_weights(graph, 0))
    return path


def write_images(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(directory / f"{i:03d}.{'png' if i % 2 else 'jpg'}"),
                    rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    return directory


def op_types(nodes) -> set[str]:
    return {node.get_type_name() for node in nodes}


def test_decode_is_everything_after_the_head_convs(models):
    graph, model, _ = models
    decode = decode_ops(model)
    assert {"Sigmoid", "Exp", "Concat"} <= op_types(decode)
    assert not op_types(decode) & {"Convolution", "Constant", "ShapeOf", "MaxPool", "PRelu"}
    heads_seen = {node.get_friendly_name().split("/")[0] for node in decode if "decoders" in node.get_friendly_name()}
    assert len(heads_seen) == len(graph.heads)


def test_int8_quantizes_outside_the_decode_and_not_inside(models):
    _, _, quantized = models
    assert sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops()) >= 10
    decode = decode_ops(quantized)
    assert decode and "FakeQuantize" not in op_types(decode)
    assert op_types(decode) >= {"Sigmoid", "Exp"}


def test_saved_int8_ir_runs_in_int8_with_int8_weights(models, tmp_path):
    _, _, quantized = models
    xml = save_ir(quantized, tmp_path / "int8.xml")
    reread = ov.Core().read_model(xml)
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
               for op in reread.get_ordered_ops())
    compiled = ov.Core().compile_model(reread, "CPU", F32)
    conv_precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model()
                       .get_ordered_ops() if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert conv_precisions & {"u8", "i8"}
    output = compiled(np.zeros((1, *SIZE, 3), np.uint8))[0]
    assert output.shape[0] == 1 and output.shape[2] == 10 and np.isfinite(output).all()


def test_int8_outputs_close_to_fp32_on_calibration_like_scenes(models):
    _, model, quantized = models
    core = ov.Core()
    fp32, int8 = core.compile_model(model, "CPU", F32), core.compile_model(quantized, "CPU", F32)
    for scene in synthetic_calib(model, 3, seed=7):
        expected, got = fp32(scene)[0][0], int8(scene)[0][0]
        spread = np.abs(expected[:, 4:] - expected[:, 4:].mean()).max()  # random weights: probabilities near 0.5
        assert np.abs(got[:, :4] - expected[:, :4]).max() < 1.0  # boxes, in input pixels (measured ~0.17)
        assert np.abs(got[:, 4:] - expected[:, 4:]).max() < 0.1 * spread  # objectness, classes (measured ~1%)


def test_calib_images_are_letterboxed(tmp_path):
    cv2.imwrite(str(tmp_path / "wide.png"), np.full((50, 100, 3), 200, np.uint8))
    boxed = read_calib_image(tmp_path / "wide.png", 64, 64)
    assert boxed.shape == (1, 64, 64, 3) and boxed.dtype == np.uint8
    assert (boxed[0, 32, :, 0] == 200).all() and boxed[0, 0, 0, 0] != 200


def test_calib_images_errors_are_one_clear_line(tmp_path):
    with pytest.raises(PruneyoloError, match="no such directory"):
        calib_images(tmp_path / "missing", 10)
    with pytest.raises(PruneyoloError, match="4 .jpg/.png images; calibration needs at least 10"):
        calib_images(write_images(tmp_path / "four", 4), 10)
    with pytest.raises(PruneyoloError, match="calib_size 300: .* has 12 .jpg/.png images; add images or ask for 12"):
        calib_images(write_images(tmp_path / "twelve", 12), 300)
    assert len(calib_images(tmp_path / "twelve", 11)) == 11


@pytest.mark.parametrize("case", ["missing", "few", "no-calib"])
def test_convert_int8_calibration_errors_exit_2(demo_files, tmp_path, case):
    calib = {"missing": ["--calib", tmp_path / "nope"], "few": ["--calib", write_images(tmp_path / "few", 3)],
             "no-calib": []}[case]
    result = run("convert", DEMO, "--weights", demo_files, "-o", tmp_path / "out", "--storage", "int8", *calib)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_convert_int8_with_calib_dir_and_ovms(demo_files, tmp_path):
    calib = write_images(tmp_path / "calib", 10)
    result = run("convert", DEMO, "--weights", demo_files, "--storage", "int8", "--calib", calib,
                 "--calib-size", 10, "--ovms", tmp_path / "repo", "--size", "64")
    assert result.exit_code == 0, result.output
    xml = tmp_path / "repo" / "demo-tiny" / "1" / "model.xml"
    model = ov.Core().read_model(xml)
    assert input_size(model) == (64, 64)
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def test_ovms_repository_layout_and_config_schema(demo_files, tmp_path):
    repo = tmp_path / "repo"
    for cfg_name in ("demo-tiny", "demo-tiny", "other model"):
        cfg = tmp_path / f"{cfg_name}.cfg"
        cfg.write_text(DEMO.read_text())
        result = run("convert", cfg, "--weights", demo_files, "--ovms", repo, "--size", "64")
        assert result.exit_code == 0, result.output
    config = json.loads((repo / "config.json").read_text())
    assert set(config) == {"model_config_list"}
    entries = [entry["config"] for entry in config["model_config_list"]]
    assert [e["name"] for e in entries] == ["demo-tiny", "other_model"]
    for entry, versions_written in zip(entries, (["1", "2"], ["1"]), strict=True):
        assert set(entry) == {"name", "base_path", "plugin_config"}  # no target_device: OVMS picks
        assert isinstance(entry["name"], str) and isinstance(entry["plugin_config"], dict)
        versions = sorted((repo / entry["base_path"]).iterdir())  # base_path is relative to config.json
        assert [v.name for v in versions] == versions_written  # a re-convert is a new version OVMS loads
        for version in versions:
            assert sorted(p.name for p in version.iterdir()) == ["model.bin", "model.xml"]
    assert not [p for p in repo.rglob("*") if p.name.startswith(".")]  # no staging left behind


def test_ovms_version_folder_appears_whole(demo_files, tmp_path, monkeypatch):
    from pruneyolo.export import ovms

    repo, seen = tmp_path / "repo", []
    (repo / "demo" / "7").mkdir(parents=True)  # versions need not be contiguous: the next is 8
    (repo / "demo" / "notes").mkdir()

    def save_and_look(model, xml_path, storage):
        seen.append((xml_path.parent.name, sorted(p.name for p in (repo / "demo").iterdir() if p.name.isdigit())))
        return save_ir(model, xml_path, storage)

    monkeypatch.setattr(ovms, "save_ir", save_and_look)
    model = ov.Core().read_model(run_convert_ir(demo_files, tmp_path))
    xml_path, _ = ovms.write_repository(model, repo, "demo", device="GPU")
    assert xml_path == repo / "demo" / "8" / "model.xml" and xml_path.with_suffix(".bin").is_file()
    (staged_in, versions_meanwhile), = seen
    assert staged_in.startswith(".") and not staged_in.isdigit() and versions_meanwhile == ["7"]
    config = json.loads((repo / "config.json").read_text())
    assert config["model_config_list"][0]["config"]["target_device"] == "GPU"


def run_convert_ir(demo_files, tmp_path) -> Path:
    result = run("convert", DEMO, "--weights", demo_files, "-o", tmp_path / "ir", "--size", "64")
    assert result.exit_code == 0, result.output
    return tmp_path / "ir" / "demo-tiny.xml"


def test_ovms_device_goes_into_the_config(demo_files, tmp_path):
    result = run("convert", DEMO, "--weights", demo_files, "--ovms", tmp_path / "repo", "--ovms-device", "AUTO",
                 "--size", "64")
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "repo" / "config.json").read_text())["model_config_list"][0]["config"]
    assert entry["target_device"] == "AUTO"
    alone = run("convert", DEMO, "--weights", demo_files, "-o", tmp_path / "ir", "--ovms-device", "GPU")
    assert alone.exit_code == 2 and "--ovms-device is only used by format ovms" in alone.output


def test_ovms_config_helpers(tmp_path):
    assert model_name("prune_0.88 demo/x") == "prune_0.88_demo_x"
    config = with_model(with_model({"model_config_list": []}, model_config("a")), model_config("b"))
    config = with_model(config, model_config("a", "GPU"))
    assert [(m["config"]["name"], m["config"].get("target_device")) for m in config["model_config_list"]] == [
        ("b", None), ("a", "GPU")]
    assert read_config(tmp_path / "none.json") == {"model_config_list": []}
    (tmp_path / "bad.json").write_text('{"model_config_list": 3}')
    with pytest.raises(PruneyoloError, match="not a list"):
        read_config(tmp_path / "bad.json")


def test_convert_needs_an_output(demo_files):
    result = run("convert", DEMO, "--weights", demo_files)
    assert result.exit_code == 2 and "-o DIR" in result.output


SHIPPED = [(path.with_suffix(".cfg"), path) for path in sorted((ROOT / "cfgs").glob("*.weights"))
           if path.with_suffix(".cfg").exists()]


def test_int8_map_within_2_points_of_fp32_on_the_shipped_demo_model(tmp_path):
    from pruneyolo.data.synth import make_dataset

    assert SHIPPED, "cfgs/ should ship the demo model's trained .weights next to its .cfg (tools/slim_demo)"
    cfg, weights = SHIPPED[0]
    data = make_dataset(tmp_path / "synth", train=30, val=1, test=150, size=320, seed=11)
    result = run("convert", cfg, "--weights", weights, "-o", tmp_path / "ir", "--storage", "int8",
                 "--calib", data / "images" / "train", "--calib-size", 30, "--eval", data)
    assert result.exit_code == 0, result.output
    found = re.search(r"mAP50 int8 ([\d.]+) vs fp32 ([\d.]+) .* mAP50-95 ([\d.]+) vs ([\d.]+)", result.output)
    int8_50, fp32_50, int8_5095, fp32_5095 = map(float, found.groups())
    assert fp32_50 > 0.3  # a trained model, so the comparison means something
    assert abs(int8_50 - fp32_50) <= 0.02 and abs(int8_5095 - fp32_5095) <= 0.02
