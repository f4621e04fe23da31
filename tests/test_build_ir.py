"""One way to build an IR (export.build) and one meaning of each precision (export.precision), used by convert,
bench, the budget search and run."""

from __future__ import annotations

from pathlib import Path

import openvino as ov
import pytest
from click.testing import CliRunner
from fixtures import random_weights

from pruneyolo.bench.timing import write_irs
from pruneyolo.bench.variants import variant_name
from pruneyolo.cli.main import main
from pruneyolo.cli.options import INFERENCE_TYPE, STORAGE_TYPE
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import write_weights
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.build import IrOptions, build_ir
from pruneyolo.export.precision import inference_precision, weight_storage
from pruneyolo.export.quantize import Calibration
from pruneyolo.runner.adapter import Adapter, ran_at

DEMO = Path(__file__).parents[1] / "cfgs" / "demo-tiny.cfg"
SIZE = (64, 64)


@pytest.fixture(scope="module")
def demo():
    graph = load_graph(DEMO, SIZE)
    return graph, random_weights(graph, 0)


def written_storage(xml) -> str:
    return ModelInfo.read(ov.Core().read_model(str(xml))).storage


def test_each_precision_has_one_vocabulary_with_the_same_aliases():
    assert [weight_storage(n) for n in ("F32", "float16", "half", "i8")] == ["fp32", "fp16", "fp16", "int8"]
    assert [inference_precision(n) for n in ("fp32", "FP16", "bfloat16")] == ["f32", "f16", "bf16"]
    assert STORAGE_TYPE.convert("f16", None, None) == "fp16" and INFERENCE_TYPE.convert("fp16", None, None) == "f16"
    with pytest.raises(PruneyoloError, match="inference precision 'int8': choose one of f32, bf16, f16"):
        inference_precision("int8")
    with pytest.raises(PruneyoloError, match="weight storage 'bf16': choose one of fp32, fp16, int8"):
        weight_storage("bf16")
    assert [variant_name(n) for n in ("ir-fp16", "IR-I8", "ir-float32", "opencv", "ir-x")] == [
        "ir-f16", "ir-int8", "ir-f32", "opencv", "ir-x"]


def test_options_make_the_calibration_source_explicit():
    assert IrOptions(storage="F16").storage == "fp16"
    with pytest.raises(PruneyoloError, match="int8 storage needs a calibration source"):
        IrOptions(storage="int8")
    with pytest.raises(PruneyoloError, match="only used with int8 storage"):
        IrOptions(calibration=Calibration(scenes=10))
    with pytest.raises(PruneyoloError, match="either image files or a number of synthetic scenes"):
        Calibration()


def test_bench_irs_are_labelled_with_the_storage_they_were_written_in(demo, tmp_path):
    files = write_irs(*demo, tmp_path, ("ir-f32", "ir-bf16", "ir-f16", "ir-int8", "opencv"), Calibration(scenes=10))
    assert files["ir-f32"] == files["ir-bf16"] and set(files) == {"ir-f32", "ir-bf16", "ir-f16", "ir-int8"}
    assert {variant: written_storage(xml) for variant, xml in files.items()} == {
        "ir-f32": "fp32", "ir-bf16": "fp32", "ir-f16": "fp16", "ir-int8": "int8"}
    with Adapter(files["ir-int8"]) as adapter:  # run names what an int8 IR runs at as bench does
        assert adapter.precision_used.startswith("i8+")
        assert adapter.precision_used == ran_at(adapter.compiled)


def test_build_ir_keeps_the_float_model_and_the_module(demo):
    built = build_ir(*demo, IrOptions("scores", storage="int8", calibration=Calibration(scenes=10)))
    assert ModelInfo.read(built.model).storage == "int8" and built.float_model is not built.model
    assert any(op.get_type_name() == "FakeQuantize" for op in built.model.get_ordered_ops())
    assert not any(op.get_type_name() == "FakeQuantize" for op in built.float_model.get_ordered_ops())
    assert type(built.module).__name__ == "ScoresModel"


def test_convert_takes_synthetic_calibration_and_any_spelling_of_the_storage(demo, tmp_path):
    graph, weights = demo
    write_weights(tmp_path / "demo.weights", graph, weights)
    for storage, expected in (("i8", "int8"), ("half", "fp16")):
        out = tmp_path / storage
        result = CliRunner().invoke(main, ["convert", str(DEMO), "--weights", str(tmp_path / "demo.weights"), "-o",
                                           str(out), "--size", "64", "--storage", storage, "--calib-size", "10"]
                                    + ["--calib", "synthetic"] * (expected == "int8"))
        assert result.exit_code == 0, result.output
        assert written_storage(out / "demo-tiny.xml") == expected
