"""`pruneyolo bench`: every row on a tiny cfg, the chart, benchmark_app parsing, peaks and per-layer stages."""

import os
from pathlib import Path

import openvino as ov
import pytest
from click.testing import CliRunner
from fixtures import random_weights

from pruneyolo.bench.timing import (
    VARIANTS,
    BenchResult,
    Timing,
    available_variants,
    bench,
    channel_note,
    footer,
    kernel_peak,
    layer_times,
    parse_benchmark_app,
    peak_for,
    peak_shares,
    plot,
    time_by_kind,
    vs_opencv,
)
from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.build import build_ir
from pruneyolo.export.convert import save_ir
from pruneyolo.export.precision import precision_name
from pruneyolo.export.quantize import Calibration
from pruneyolo.runner.adapter import compile_config

DEMO = Path(__file__).parents[1] / "cfgs" / "demo-tiny.cfg"
SIZE = "64"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

APP_LATENCY = """[ INFO ] Latency:
[ INFO ]    Median:        766.99 us
[ INFO ]    Average:       892.36 us
[ INFO ] Throughput:   2015.32 FPS"""


def test_bench_command_prints_every_row_and_writes_the_chart(demo_weights, tmp_path):
    chart = tmp_path / "chart.png"
    result = CliRunner().invoke(main, ["bench", str(DEMO), "--weights", str(demo_weights), "--size", SIZE,
                                       "--seconds", "0.5", "--calib-size", "10", "--plot", str(chart)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    for label in ("IR f32", "IR f16", "IR int8", "OpenCV DNN", "ONNX Runtime", "PyTorch eager", "peak GFLOP/s",
                  "synthetic scenes", "(default)"):
        assert label in result.output
    host = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    assert f"host: {host}, {os.cpu_count()} logical cores, capabilities " in result.output.replace("\n", " ")
    assert chart.read_bytes().startswith(PNG_MAGIC)


def test_bench_result_has_all_variants_timed(demo_weights, tmp_path):
    graph = load_graph(DEMO, (64, 64))
    weights = random_weights(graph, 0)
    result = bench(graph, weights, demo_weights, tmp_path, 0.5, ("ir-f32", "ir-int8", "opencv"), Calibration(scenes=10),
                   app=False, peaks={"f32": 100.0, "i8": 400.0})
    assert [t.variant for t in result.timings] == ["ir-f32", "ir-int8", "opencv"]
    assert all(t.latency_ms > 0 and t.rate > 0 and t.app_rate is None for t in result.timings)
    assert result.timing("ir-int8").precision.startswith("i8+")
    assert result.timing("ir-f32").precision == "f32"
    ir, opencv = result.timing("ir-f32"), result.timing("opencv")
    assert vs_opencv(result, ir) == pytest.approx((opencv.latency_ms / ir.latency_ms, ir.rate / opencv.rate))
    assert plot(result, tmp_path / "x.png").read_bytes().startswith(PNG_MAGIC)


def test_available_variants_rejects_unknown_and_knows_bf16():
    core = ov.Core()
    has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ("ir-bf16" in available_variants(core, VARIANTS)) == has_bf16
    with pytest.raises(PruneyoloError, match="unknown bench variant 'tensorrt'"):
        available_variants(core, ("ir-f32", "tensorrt"))


def test_parse_benchmark_app_reads_ms_and_us():
    assert parse_benchmark_app(APP_LATENCY) == pytest.approx((0.76699, 2015.32))
    assert parse_benchmark_app("Median: 12.5 ms\nThroughput: 80.0 FPS") == (12.5, 80.0)
    with pytest.raises(PruneyoloError, match="no Median/Throughput"):
        parse_benchmark_app("[ ERROR ] nothing ran")


def test_precisions_and_peaks():
    assert precision_name(ov.Type.bf16) == "bf16" and precision_name(ov.Type.f32) == "f32"
    peaks = {"f32": 100.0, "bf16": 300.0, "i8": 900.0}
    assert (peak_for("f32", peaks), peak_for("bf16", peaks), peak_for("i8+bf16", peaks)) == (100.0, 300.0, 900.0)
    assert peak_for("bf16", {"f32": 100.0}) == 100.0


def test_one_precision_vocabulary_for_compile_options():
    assert compile_config("latency", "FP16", 4) == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f16",
                                                    "PERFORMANCE_HINT_NUM_REQUESTS": "4"}
    assert compile_config("throughput") == {"PERFORMANCE_HINT": "THROUGHPUT"}
    assert precision_name("bfloat16") == "bf16" and precision_name(ov.Type.f16) == "f16"
    with pytest.raises(PruneyoloError, match="choose one of f32, bf16, f16"):
        compile_config("latency", "int4")


@pytest.mark.parametrize("kind", ["gemm", "conv"])
def test_kernel_peaks_are_positive_and_finite(kind):
    assert 1 < kernel_peak(ov.Core(), kind, "i8" if kind == "conv" else "f32", 0.2) < 1e5


def test_layer_times_split_preprocessing_and_decode(tmp_path):
    graph = load_graph(DEMO, (64, 64))
    xml = save_ir(build_ir(graph, random_weights(graph, 0)).model, tmp_path / "m.xml")
    kinds = time_by_kind(layer_times(xml, "f32", runs=2))
    assert {"pre-processing", "decode", "Convolution"} <= set(kinds)


def test_timing_labels_and_default_row():
    result = BenchResult("m", (64, 64), 1.0, [Timing("ir-f32", "f32", 2.0, 500.0),
                                              Timing("ir-bf16", "bf16", 1.0, 1000.0)], {"f32": 1.0}, "bf16")
    assert result.default_variant == "ir-bf16" and result.timing("ir-f32").label == "IR f32"
    assert vs_opencv(result, result.timings[0]) == (None, None)


def test_speed_ups_over_opencv_are_latency_and_rate_ratios():
    opencv = Timing("opencv", "f32", 8.0, 150.0)
    ir = Timing("ir-f32", "f32", 2.0, 600.0)
    result = BenchResult("m", (64, 64), 1.0, [ir, opencv], {"f32": 1.0}, "f32")
    assert vs_opencv(result, result.timing("ir-f32")) == (4.0, 4.0)  # 8 ms -> 2 ms, 150/s -> 600/s
    slower = Timing("torch", "f32", 16.0, 50.0)
    assert vs_opencv(result, slower) == (0.5, 1 / 3)


def test_footer_gives_each_precisions_share_of_its_peak_and_flags_irregular_widths():
    timings = [Timing("ir-f32", "f32", 2.0, 50.0), Timing("ir-int8", "i8+bf16", 1.0, 100.0),
               Timing("opencv", "f32", 9.0, 10.0)]
    result = BenchResult("m", (64, 64), 2.0, timings, {"f32": 200.0, "bf16": 400.0, "i8": 800.0}, "bf16")
    assert peak_shares(result) == [("share of the peak by precision (inf/s x BFLOPs / peak): IR f32 (f32) 50%, "
                                    "IR int8 (i8+bf16) 25%")]
    assert peak_shares(result)[0] in footer(result)
    pruned = channel_note(load_graph(Path(__file__).parents[1] / "cfgs" / "yolov4-tiny_prune_0.88.cfg"))
    assert len(pruned) == 1 and "13 of 19 prunable convs" in pruned[0] and "(2, 5, 7, 14, 17, 18, ...)" in pruned[0]
    assert channel_note(load_graph(DEMO)) == []
