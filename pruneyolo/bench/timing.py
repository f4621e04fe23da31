"""One speed table for a cfg + weights: OpenVINO IR at each precision (our loops and benchmark_app), OpenCV DNN,
ONNX Runtime and PyTorch eager, at batch 1 and one input size, against the machine's measured peak."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import openvino as ov

from pruneyolo.bench.variants import (
    CALIB_IMAGES,
    HINTS,
    IR_FILES,
    IR_VARIANTS,
    LABELS,
    OPENVINO_VARIANTS,
    VARIANTS,
    cpu_capabilities,
    default_precision,
    host_line,
    variant_name,
)
from pruneyolo.darknet.cfg import format_cfg
from pruneyolo.darknet.graph import Graph
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.quantize import Calibration
from pruneyolo.files import atomic_write, write_png
from pruneyolo.runner.adapter import compile_config, ran_at

MIN_RUNS = 3
SYNTHETIC_CALIBRATION = Calibration(scenes=CALIB_IMAGES)  # bench's and the budget's default int8 calibration


@dataclass(frozen=True)
class Timing:
    """One variant's speed: median sync latency and throughput, from our loops and from benchmark_app."""

    variant: str
    precision: str  # what actually ran: f32, bf16, i8+bf16, ...
    latency_ms: float
    rate: float  # inferences/s: AsyncInferQueue at the THROUGHPUT hint; back-to-back calls for the others
    app_latency_ms: float | None = None
    app_rate: float | None = None

    @property
    def label(self) -> str:
        return LABELS[self.variant]


@dataclass(frozen=True)
class BenchResult:
    """A whole bench run: the model, each variant's timing, the peaks and notes on how it ran."""

    model: str
    size: tuple[int, int]
    bflops: float
    timings: list[Timing]
    peaks: dict[str, float]  # GFLOP/s by precision: f32, bf16, i8
    default_precision: str
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    host: str = ""  # variants.host_line of the machine it ran on

    def timing(self, variant: str) -> Timing | None:
        return next((t for t in self.timings if t.variant == variant), None)

    @property
    def default_variant(self) -> str:
        """The IR row compiled at the device's own precision (bf16 where the CPU has it, else f32)."""
        return "ir-bf16" if self.default_precision == "bf16" and self.timing("ir-bf16") else "ir-f32"


# --- loops ---------------------------------------------------------------------------------------------------

def sync_latencies(call: Callable[[], object], seconds: float) -> list[float]:
    """Milliseconds per call, back to back for `seconds` (at least MIN_RUNS), after one warm-up call."""
    call()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < MIN_RUNS or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def request_latencies(compiled: ov.CompiledModel, inputs: dict, seconds: float) -> list[float]:
    """sync_latencies of one infer request of `compiled`; the request is gone when this returns."""
    request = compiled.create_infer_request()
    return sync_latencies(lambda: request.infer(inputs), seconds)


def async_rate(compiled: ov.CompiledModel, inputs: dict, seconds: float) -> float:
    """Inferences/s with an AsyncInferQueue of the compiled model's optimal size kept full for `seconds`. No Python
    callback: OpenVINO's threads then never wait for the GIL, so dropping the compiled model cannot deadlock."""
    queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    try:
        for _ in range(len(queue)):  # warm-up: every request once
            queue.start_async(inputs)
        queue.wait_all()
        started = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or started < MIN_RUNS:
            queue.start_async(inputs)  # blocks while every request is busy
            started += 1
        queue.wait_all()  # every started request has finished
        return started / (time.perf_counter() - start)
    finally:
        queue.wait_all()
        del queue


def exec_type(node: ov.Node) -> str:
    """A runtime-model node's executed layer type (Convolution, Reorder, Subgraph, ...)."""
    return node.get_rt_info()["layerType"].astype(str)


# --- benchmark_app ---------------------------------------------------------------------------------------------

def benchmark_app_command(xml: Path, hint: str, seconds: float, precision: str | None) -> list[str]:
    """benchmark_app (next to this Python) on CPU at batch 1 with a performance hint."""
    command = [str(Path(sys.executable).parent / "benchmark_app"), "-m", str(xml), "-d", "CPU",
               "-hint", hint, "-t", str(max(1, round(seconds)))]
    return command + (["-infer_precision", precision] if precision else [])


def parse_benchmark_app(text: str) -> tuple[float, float]:
    """(median latency ms, throughput FPS) from benchmark_app's report."""
    median = re.search(r"Median:\s*([\d.]+)\s*(ms|us)", text)
    rate = re.search(r"Throughput:\s*([\d.]+)\s*FPS", text)
    if not median or not rate:
        raise PruneyoloError(f"benchmark_app printed no Median/Throughput lines: {text.strip()[-300:]!r}")
    return float(median.group(1)) * (1e-3 if median.group(2) == "us" else 1.0), float(rate.group(1))


def benchmark_app(xml: Path, hint: str, seconds: float, precision: str | None) -> tuple[float, float]:
    """Run benchmark_app once; its (median latency ms, throughput FPS)."""
    try:
        done = subprocess.run(benchmark_app_command(xml, hint, seconds, precision), capture_output=True, text=True,
                              check=False)
    except FileNotFoundError:
        raise PruneyoloError("benchmark_app is not installed next to this Python (it comes with the openvino "
                             "package); pass --no-benchmark-app") from None
    if done.returncode:
        raise PruneyoloError(f"benchmark_app failed on {xml}: {(done.stdout + done.stderr).strip()[-300:]}")
    return parse_benchmark_app(done.stdout)


# --- the variants -------------------------------------------------------------------------------------------------

def time_ir(core: ov.Core, variant: str, xml: Path, image: np.ndarray, seconds: float, app: bool) -> Timing:
    """Sync latency (LATENCY hint) and async throughput (THROUGHPUT hint) of an IR, and benchmark_app's."""
    precision = HINTS[variant]
    latency_model = core.compile_model(xml, "CPU", compile_config("LATENCY", precision))
    latency = statistics.median(request_latencies(latency_model, {0: image}, seconds))
    precision_ran = ran_at(latency_model)
    del latency_model  # one compiled model alive at a time, each dropped after its requests
    throughput_model = core.compile_model(xml, "CPU", compile_config("THROUGHPUT", precision))
    rate = async_rate(throughput_model, {0: image}, seconds)
    del throughput_model
    app_latency = app_rate = None
    if app:
        app_latency, _ = benchmark_app(xml, "latency", seconds, precision)
        _, app_rate = benchmark_app(xml, "throughput", seconds, precision)
    return Timing(variant, precision_ran, latency, rate, app_latency, app_rate)


def sequential_timing(variant: str, call: Callable[[], object], seconds: float) -> Timing:
    """A framework without an async API: median latency; throughput = back-to-back calls per second."""
    latencies = sync_latencies(call, seconds)
    return Timing(variant, "f32", statistics.median(latencies), 1e3 * len(latencies) / sum(latencies))


def darknet_files(graph: Graph, weights_path: Path, workdir: Path) -> tuple[Path, Path]:
    """The cfg with [net] set to the graph's input size (OpenCV builds at the cfg's size), and the weights."""
    cfg_path = workdir / "opencv.cfg"
    atomic_write(cfg_path, format_cfg(graph.sized_sections()))
    return cfg_path, weights_path


def time_opencv(graph: Graph, weights_path: Path, workdir: Path, image: np.ndarray, seconds: float) -> Timing:
    """OpenCV DNN's Darknet importer (default backend and target): blobFromImage + forward of the heads."""
    net = cv2.dnn.readNetFromDarknet(*(str(p) for p in darknet_files(graph, weights_path, workdir)))
    names = net.getUnconnectedOutLayersNames()
    width, height = graph.size

    def infer():
        net.setInput(cv2.dnn.blobFromImage(image[0], 1 / 255.0, (width, height), swapRB=True))
        return net.forward(names)

    return sequential_timing("opencv", infer, seconds)


def to_float_rgb(image: np.ndarray) -> np.ndarray:
    """u8 NHWC BGR -> float NCHW RGB in [0, 1], what the ONNX export and the module take."""
    return np.ascontiguousarray(image[..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0


def time_onnxruntime(onnx_path: Path, image: np.ndarray, seconds: float) -> Timing:
    """ONNX Runtime's default CPU session on our ONNX export, pre-processing in numpy included."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sequential_timing("onnxruntime", lambda: session.run(None, {"image": to_float_rgb(image)}), seconds)


def time_torch(module, image: np.ndarray, seconds: float) -> Timing:
    """PyTorch eager on the in-process module (decode included), under inference_mode."""
    import torch

    def infer():
        with torch.inference_mode():
            return module(torch.from_numpy(to_float_rgb(image)))

    return sequential_timing("torch", infer, seconds)


# --- the machine's peak -------------------------------------------------------------------------------------

def peak_model(kind: str, int8: bool) -> tuple[ov.Model, tuple[int, ...], float]:
    """A compute-bound model, its input shape and its FLOPs: 'gemm' is x[512,2048] @ w[2048,2048], 'conv' a 3x3
    conv 256->256 on 52x52 (yolov4's own kind of layer); int8 puts FakeQuantize (256 levels) on both operands."""
    from openvino import opset13 as ops

    shape, weight_shape = ((512, 2048), (2048, 2048)) if kind == "gemm" else ((1, 256, 52, 52), (256, 256, 3, 3))
    source = ops.parameter(list(shape), ov.Type.f32, name="x")
    x, w = source, ops.constant(np.random.default_rng(0).uniform(-1, 1, weight_shape).astype(np.float32))
    if int8:
        low, high = ops.constant(np.float32(-1)), ops.constant(np.float32(1))
        x = ops.fake_quantize(x, low, high, low, high, 256)
        w = ops.fake_quantize(w, low, high, low, high, 255)
    if kind == "gemm":
        return ov.Model([ops.matmul(x, w, False, False)], [source], kind), shape, 2.0 * 512 * 2048 * 2048
    output = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
    return ov.Model([output], [source], kind), shape, 2.0 * 256 * 256 * 9 * 52 * 52


def kernel_peak(core: ov.Core, kind: str, precision: str, seconds: float) -> float:
    """GFLOP/s of a peak model at `precision` (f32, bf16 or i8) on all cores: the better of the fastest sync call
    (LATENCY hint: one request on every core) and the AsyncInferQueue rate (THROUGHPUT hint: a stream per core)."""
    model, shape, flops = peak_model(kind, precision == "i8")
    hint = None if precision == "i8" else precision
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    latency_model = core.compile_model(model, "CPU", compile_config("LATENCY", hint))
    best_sync = 1e3 / min(request_latencies(latency_model, {0: x}, seconds))
    del latency_model
    throughput_model = core.compile_model(model, "CPU", compile_config("THROUGHPUT", hint))
    rate = async_rate(throughput_model, {0: x}, seconds)
    del throughput_model
    return flops * max(best_sync, rate) / 1e9


def measure_peaks(core: ov.Core, seconds: float) -> dict[str, float]:
    """The machine's GFLOP/s at f32, bf16 (if the CPU has it) and int8 (VNNI), measured now: the better of a
    large GEMM and a large 3x3 convolution."""
    capabilities = cpu_capabilities(core)
    precisions = ["f32"] + (["bf16"] if "BF16" in capabilities else []) + (["i8"] if "INT8" in capabilities else [])
    return {precision: max(kernel_peak(core, kind, precision, seconds) for kind in ("gemm", "conv"))
            for precision in precisions}


def peak_for(precision: str, peaks: dict[str, float]) -> float:
    """The peak a variant is held to: int8 rows to the int8 peak, bf16/f16 to bf16, the rest to f32."""
    if precision.startswith("i8") and "i8" in peaks:
        return peaks["i8"]
    return peaks.get("bf16", peaks["f32"]) if precision.endswith(("bf16", "f16")) else peaks["f32"]


# --- preparing the models ---------------------------------------------------------------------------------------

def available_variants(core: ov.Core, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The wanted variants (any spelling), named as in VARIANTS, that this machine can run (bf16 needs the CPU's
    BF16 capability)."""
    wanted = tuple(variant_name(v) for v in wanted)
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise PruneyoloError(f"unknown bench variant {unknown[0]!r}: choose from {', '.join(VARIANTS)}")
    has_bf16 = "BF16" in cpu_capabilities(core)
    return tuple(v for v in wanted if v != "ir-bf16" or has_bf16)


def write_irs(graph: Graph, weights, workdir: Path, variants: tuple[str, ...],
              calibration: Calibration | None = None) -> dict[str, Path]:
    """The IR file of each wanted IR variant: one per weight storage, built by build_ir and labelled with its
    storage (int8 quantized on `calibration`)."""
    from pruneyolo.export.build import IrOptions, build_ir
    from pruneyolo.export.convert import save_ir

    wanted = [v for v in variants if v in IR_VARIANTS]
    for name, storage in {IR_FILES[v]: IR_VARIANTS[v][0] for v in wanted}.items():
        options = IrOptions(storage=storage, calibration=calibration if storage == "int8" else None)
        save_ir(build_ir(graph, weights, options).model, workdir / name, storage)
    return {v: workdir / IR_FILES[v] for v in wanted}


def bench(graph: Graph, weights, weights_path: Path, workdir: Path, seconds: float = 5.0,
          variants: tuple[str, ...] = VARIANTS, calibration: Calibration = SYNTHETIC_CALIBRATION, app: bool = True,
          peaks: dict[str, float] | None = None, name: str | None = None,
          log: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Time every variant on one random u8 BGR frame at the graph's input size (batch 1), plus the peaks; the int8
    IR is calibrated on `calibration`."""
    from pruneyolo.export.convert import export_module, save_onnx

    core = ov.Core()
    variants = available_variants(core, variants)
    width, height = graph.size
    image = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    log("converting")
    irs = write_irs(graph, weights, Path(workdir), variants, calibration)
    notes = [f"int8 calibrated on {calibration.text}"] * ("ir-int8" in variants) + channel_note(graph)
    module = export_module(graph, weights) if {"onnxruntime", "torch"} & set(variants) else None
    timings = []
    for variant in variants:
        log(f"timing {LABELS[variant]}")
        if variant in OPENVINO_VARIANTS:
            timings.append(time_ir(core, variant, irs[variant], image, seconds, app))
        elif variant == "opencv":
            timings.append(time_opencv(graph, weights_path, Path(workdir), image, seconds))
        elif variant == "onnxruntime":
            onnx_path = save_onnx(module, graph, Path(workdir) / "model.onnx", "decoded")
            timings.append(time_onnxruntime(onnx_path, image, seconds))
        else:
            timings.append(time_torch(module, image, seconds))
    if peaks is None:
        log("measuring the peaks")
        peaks = measure_peaks(core, min(seconds, 2.0))
    default = default_precision(core)
    return BenchResult(name or Path(graph.path).stem, (width, height), graph.bflops, timings, peaks, default, notes,
                       os.getloadavg(), host_line(core))


# --- reporting -----------------------------------------------------------------------------------------------------

def gflops(result: BenchResult, timing: Timing) -> float:
    """Achieved GFLOP/s: darknet BFLOPs (2 x multiply-adds) x throughput."""
    return result.bflops * timing.rate


def peak_fraction(result: BenchResult, timing: Timing) -> float:
    """Achieved GFLOP/s over the measured peak at the row's precision."""
    return gflops(result, timing) / peak_for(timing.precision, result.peaks)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def vs_opencv(result: BenchResult, timing: Timing) -> tuple[float | None, float | None]:
    """(latency speed-up, throughput speed-up) over OpenCV DNN, None without an OpenCV row."""
    opencv = result.timing("opencv")
    if not opencv:
        return None, None
    return ratio(opencv.latency_ms, timing.latency_ms), ratio(timing.rate, opencv.rate)


def fmt(value: float | None, pattern: str = "{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def result_table(result: BenchResult):
    """The rich table: one row per variant."""
    from rich.table import Table

    width, height = result.size
    table = Table(title=f"{result.model} @ {width}x{height}, batch 1, {result.bflops:.3f} BFLOPs, "
                        f"load {result.load[0]:.2f}")
    for header in ("variant", "ran as", "latency ms", "bench_app ms", "inf/s", "bench_app inf/s", "GFLOP/s",
                   "% peak", "x OpenCV lat", "x OpenCV inf/s"):
        table.add_column(header, justify="left" if header in ("variant", "ran as") else "right")
    for timing in result.timings:
        latency_gain, rate_gain = vs_opencv(result, timing)
        default = " (default)" if timing.variant == result.default_variant else ""
        table.add_row(timing.label + default, timing.precision, fmt(timing.latency_ms, "{:.2f}"),
                      fmt(timing.app_latency_ms, "{:.2f}"), fmt(timing.rate), fmt(timing.app_rate),
                      fmt(gflops(result, timing)), fmt(100 * peak_fraction(result, timing)),
                      fmt(latency_gain, "{:.2f}"), fmt(rate_gain, "{:.2f}"))
    return table


def footer(result: BenchResult) -> list[str]:
    """The lines under the table: peaks, what the columns mean, notes."""
    peaks = ", ".join(f"{name} {value:.0f}" for name, value in result.peaks.items())
    return [(f"peak GFLOP/s (best of a 512x2048x2048 GEMM and a 3x3 256->256 conv at 52x52 in OpenVINO, LATENCY or "
             f"THROUGHPUT hint, measured in this run): "
            f"{peaks}; % peak uses the row's precision (i8 rows: the int8 peak)"),
            ("latency: median of back-to-back sync calls (LATENCY hint); inf/s: AsyncInferQueue at the THROUGHPUT "
            "hint for IRs, back-to-back calls for the others; inputs are u8 BGR frames, pre-processing included"),
            f"device default precision: {result.default_precision}", *peak_shares(result), *result.notes,
            *[result.host] * bool(result.host)]


def peak_shares(result: BenchResult) -> list[str]:
    """One line: each IR row's throughput share of the peak at the precision it ran, the share pruning is judged by."""
    shares = [f"{t.label} ({t.precision}) {100 * peak_fraction(result, t):.0f}%" for t in result.timings
              if t.variant in OPENVINO_VARIANTS]
    return [f"share of the peak by precision (inf/s x BFLOPs / peak): {', '.join(shares)}"] if shares else []


def channel_note(graph: Graph) -> list[str]:
    """A note when prunable convs have channel counts that are not multiples of `prune --round`'s default (a
    pruned model's irregular widths, which the kernels' vector widths do not fit)."""
    from pruneyolo.prune import DEFAULT_ROUND as multiple
    from pruneyolo.prune.pruning import channel_constraints

    prunable = [graph.nodes[index].filters for index in channel_constraints(graph).prunable]
    odd = sorted({filters for filters in prunable if filters % multiple})
    if not odd:
        return []
    return [(f"{sum(filters % multiple > 0 for filters in prunable)} of {len(prunable)} prunable convs have channel "
             f"counts that are not multiples of {multiple} ({', '.join(map(str, odd[:6]))}{', ...' * (len(odd) > 6)});"
             " `pruneyolo prune --round N` keeps them multiples of N")]


def plot(result: BenchResult, path) -> Path:
    """A bar chart of inferences/s (latency mode and throughput mode) per variant, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [t.label for t in result.timings]
    rows = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.6))
    axes.barh(rows - 0.2, [1e3 / t.latency_ms for t in result.timings], 0.4, label="latency mode (1000 / median ms)")
    axes.barh(rows + 0.2, [t.rate for t in result.timings], 0.4, label="throughput mode")
    axes.set_yticks(rows, labels)
    axes.invert_yaxis()
    axes.set_xlabel("inferences / s (batch 1)")
    axes.set_title(f"{result.model} @ {result.size[0]}x{result.size[1]}, {result.bflops:.2f} BFLOPs")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return write_png(path, figure)


# --- where the time goes ---------------------------------------------------------------------------------------------

def walk(starts: list[ov.Node], step: Callable[[ov.Node], list[ov.Node]], stop: Callable[[ov.Node], bool]) -> set:
    """Names of the nodes reachable from `starts` by `step` without passing a node where `stop` holds."""
    seen: set[str] = set()
    pending = list(starts)
    while pending:
        node = pending.pop()
        if stop(node) or node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        pending += step(node)
    return seen


def stage_of(runtime: ov.Model) -> dict[str, str]:
    """Executed node name -> 'pre-processing' (input to first conv), 'decode' (last convs to outputs)."""
    def is_conv(node):
        return exec_type(node) == "Convolution"

    def consumers(node):
        return [target.get_node() for output in node.outputs() for target in output.get_target_inputs()]

    decode = walk([r.input_value(0).get_node() for r in runtime.get_results()],
                  lambda node: [v.get_node() for v in node.input_values()], is_conv)
    pre = walk([p for p in runtime.get_parameters()], consumers, is_conv)
    return {**{name: "pre-processing" for name in pre}, **{name: "decode" for name in decode}}


@dataclass(frozen=True)
class LayerTime:
    """One executed node of a compiled IR: its stage or type, median time per inference and FLOPs (convs)."""

    name: str
    kind: str  # 'pre-processing', 'decode', or the executed layer type (Convolution, Reorder, MaxPool, ...)
    ms: float
    flops: float = 0.0

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.ms / 1e6 if self.ms else 0.0


def conv_flops(node: ov.Node) -> float:
    """2 x multiply-adds of an executed convolution: weight elements x output pixels."""
    weights = node.input_value(1).get_partial_shape().to_shape()
    _, _, height, width = node.get_output_partial_shape(0).to_shape()
    return 2.0 * float(np.prod(weights)) * height * width


def layer_times(xml: Path, precision: str | None, runs: int = 10) -> list[LayerTime]:
    """Per executed node, median ms over `runs` sync inferences (LATENCY hint), from OpenVINO's per-layer counters
    (what benchmark_app -pc prints); slowest first."""
    compiled = ov.Core().compile_model(xml, "CPU", {**compile_config("LATENCY", precision), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    image = np.random.default_rng(0).integers(0, 256, list(compiled.input(0).get_shape()), dtype=np.uint8)
    runtime = compiled.get_runtime_model()
    stages = stage_of(runtime)
    flops = {node.get_friendly_name(): conv_flops(node) for node in runtime.get_ordered_ops()
             if exec_type(node) == "Convolution"}
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(runs):
        request.infer({0: image})
        for info in request.profiling_info:
            key = (info.node_name, stages.get(info.node_name, info.node_type))
            samples.setdefault(key, []).append(info.real_time.total_seconds() * 1e3)
    times = [LayerTime(name, kind, statistics.median(values), flops.get(name, 0.0))
             for (name, kind), values in samples.items()]
    return sorted(times, key=lambda layer: -layer.ms)


def time_by_kind(times: list[LayerTime]) -> dict[str, float]:
    """Total ms per stage / layer type, largest first."""
    totals: dict[str, float] = {}
    for layer in times:
        totals[layer.kind] = totals.get(layer.kind, 0.0) + layer.ms
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
