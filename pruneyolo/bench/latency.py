"""Per-layer latency on the device: each conv measured alone as a one-layer IR on a grid of widths, cached, and a
predictor of a (pruned) network's latency calibrated on whole networks.

A conv's time depends on its input and output widths. The table measures two curves per conv at its real input
size: output widths at the full input width, and input widths at the full output width, and predicts the pair as
separable, t(i, o) = t(I, o) * t(i, O) / t(I, O). The grid: 1, 2, 4, every `step` / 2 channels to 64, then every `step` (16)
to the full width: AVX2 blocks f32 channels by 8, AVX-512 and AMX tiles by 16, and GPU/NPU layouts by 16/32, so
every block edge of 16 is sampled, and of 8 where the widths are small and steps matter most. A width between grid
points costs what the next grid width costs where the device computes in blocks (GPU, NPU) and the straight line
between its neighbours on the CPU, whose kernels here run channels-last and were measured to cost about in
proportion to the channels (pricing at the next grid width over-predicted irregular prunes by up to 30%).

A point's time is the conv node's own time from OpenVINO's per-layer counters (PERF_COUNT), bias and activation
fused into it: a one-layer IR's wall time is mostly the reorders of its input and output between the caller's
layout and the kernel's (3.6 + 12.7 ms beside a 7.4 ms conv on demo-csp's first layer), which a whole network
pays only at its ends. A whole network also runs concats, upsamples, reorders and the decode, and fuses what one
layer cannot: `calibrate` times whole networks at a few uniform widths together, taking turns call by call
(`interleaved_ms`), so that a machine whose speed drifts (a shared VM's can move by 40% within a minute) slows them
alike, and maps a network's sum of conv times to its latency through them: piecewise linear between the timed
networks (a straight line missed the floor of fixed costs that narrow networks keep: six prunes of demo-csp at
832, timed in two sessions, within 15.2% and 22.7% by the line, 7.7% and 9.5% by the interpolation), along the
end segments beyond them.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import openvino as ov

from pruneyolo.bench.timing import request_latencies, sync_latencies
from pruneyolo.darknet.cfg import format_cfg
from pruneyolo.darknet.graph import Conv, Graph, build_graph
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.precision import inference_precision, weight_storage
from pruneyolo.export.quantize import Calibration
from pruneyolo.files import atomic_write
from pruneyolo.prune.pruning import channel_constraints, channel_origins, prune_sections
from pruneyolo.runner.adapter import compile_config, ran_at

FINE_UP_TO = 64  # widths up to this are sampled every half step (8 channels at the default step of 16)
SMALL_WIDTHS = (1, 2, 4)
CALIBRATION_KEEPS = (1.0, 0.5, 0.25)  # uniform kept fractions of every group the whole-network fit measures
TIMING_SCENES = 8  # int8 whole networks for the fit are calibrated on this many scenes (time hardly depends on it)
METHOD = "conv counters"  # in every cache key: tables measured another way are measured again
CONV_NODES = ("Convolution", "GroupConvolution")
BLOCKED_DEVICES = ("GPU", "NPU")  # widths between grid points cost the next grid width's (else: interpolated)
BURST = 2  # interleaved_ms runs each model this many times in a row and times all but the first


def cache_root() -> Path:
    """$XDG_CACHE_HOME/pruneyolo/latency, else ~/.cache/pruneyolo/latency."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pruneyolo" / "latency"


def width_grid(full: int, step: int = 16) -> tuple[int, ...]:
    """1, 2, 4, every `step` / 2 to 64, every `step` beyond, and `full`, none above `full`."""
    fine = range(step // 2, FINE_UP_TO + 1, step // 2)
    coarse = range(step, full + 1, step)
    return tuple(sorted({w for w in (*SMALL_WIDTHS, *fine, *coarse) if w < full} | {full}))


@dataclass(frozen=True)
class Shape:
    """What a conv's time depends on besides its widths."""

    size: int
    stride: tuple[int, int]
    padding: int
    groups: int
    dilation: int
    height: int
    width: int
    activation: str

    @staticmethod
    def of(conv: Conv) -> Shape:
        _, height, width = conv.in_shape
        return Shape(conv.size, (conv.stride_y, conv.stride_x), conv.padding, conv.groups, conv.dilation, height,
                     width, conv.activation)


@dataclass(frozen=True)
class Curve:
    """One conv's measured ms: at full widths, over output widths (full input) and over input widths (full output).
    Each curve is made non-decreasing in width (a narrower width never costs more than a wider one)."""

    shape: Shape
    in_full: int
    out_full: int
    full_ms: float
    out_ms: dict[int, float] = field(default_factory=dict)
    in_ms: dict[int, float] = field(default_factory=dict)

    _out: tuple = field(init=False, repr=False, compare=False)  # (widths, ms) ascending, for bisection
    _in: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for axis, full in (("out_ms", self.out_full), ("in_ms", self.in_full)):
            curve = monotone({**getattr(self, axis), full: self.full_ms})
            object.__setattr__(self, axis, curve)
            object.__setattr__(self, "_" + axis[:-3], (list(curve), list(curve.values())))

    def ms(self, in_width: int, out_width: int, blocked: bool = False) -> float:
        """Predicted ms at these widths: the separable product, a width between grid points priced at the next grid
        width's ms (blocked) or on the straight line between its neighbours."""
        if in_width > self.in_full or out_width > self.out_full:
            raise PruneyoloError(f"widths {in_width}->{out_width} exceed the profiled {self.in_full}->{self.out_full}")
        if not self.full_ms:
            return 0.0
        price = stepped if blocked else interpolated
        return price(self._out, out_width) * price(self._in, in_width) / self.full_ms

    def steps(self) -> list[int]:
        """Output widths where the cost drops below the next wider grid width's."""
        widths = sorted(self.out_ms)
        return [w for w, wider in itertools.pairwise(widths) if self.out_ms[w] < self.out_ms[wider]]


def monotone(curve: dict[int, float]) -> dict[int, float]:
    """Each width's ms at most that of any wider width (the running minimum from the widest)."""
    result, lowest = {}, float("inf")
    for width in sorted(curve, reverse=True):
        lowest = min(lowest, curve[width])
        result[width] = lowest
    return dict(sorted(result.items()))


def stepped(curve: tuple[list[int], list[float]], width: int) -> float:
    """The ms of the smallest grid width at or above `width`, from (ascending widths, their ms)."""
    widths, values = curve
    return values[bisect.bisect_left(widths, width)]


def interpolated(curve: tuple[list[int], list[float]], width: int) -> float:
    """The ms at `width` on the straight line between its neighbouring grid widths (ascending widths, their ms)."""
    widths, values = curve
    return float(np.interp(width, widths, values))


@dataclass(frozen=True)
class LatencyTable:
    """A cfg's convs profiled on one device, precision and storage, with the whole-network fit."""

    device: str
    device_name: str
    precision: str
    storage: str
    version: str
    curves: dict[int, Curve]  # original conv index -> its curve
    scale: float = 1.0
    other_ms: float = 0.0
    fit: tuple[tuple[float, float], ...] = ()  # (sum of conv ms, measured ms) of each whole network fitted

    @property
    def blocked(self) -> bool:
        """Whether widths between grid points cost the next grid width's (devices that compute in blocks)."""
        return self.device.split(".")[0] in BLOCKED_DEVICES

    def conv_ms(self, conv: int, in_width: int, out_width: int) -> float:
        """The conv's own ms at these widths, as profiled (`whole_ms` turns a network's sum into its latency)."""
        return self.curves[conv].ms(in_width, out_width, self.blocked)

    def grid(self, conv: int) -> tuple[int, ...]:
        return tuple(self.curves[conv].out_ms)

    def whole_ms(self, conv_total: float) -> float:
        """A network's predicted ms from its sum of conv ms: interpolated between the fitted networks (measured ms
        made non-decreasing in the sum), along the nearest end segment beyond them; scale * sum + other_ms
        without two distinct fitted networks."""
        points = sorted(set(self.fit))
        raw = np.array([p[0] for p in points])
        if len(points) < 2 or np.ptp(raw) <= 0:
            return self.scale * conv_total + self.other_ms
        measured = np.maximum.accumulate(np.array([p[1] for p in points]))
        end = 0 if conv_total < raw[0] else -2 if conv_total > raw[-1] else None
        if end is None:
            return float(np.interp(conv_total, raw, measured))
        slope = max((measured[end + 1] - measured[end]) / max(raw[end + 1] - raw[end], 1e-12), 0.0)
        return float(measured[end] + slope * (conv_total - raw[end]))

    def calibrated(self, fit: tuple[tuple[float, float], ...]) -> LatencyTable:
        """This table fitted to (sum of conv ms, measured ms) pairs: `whole_ms` interpolates them; scale and other_ms
        are their least-squares line (scale 1 and a mean offset when the slope is not positive), for reports."""
        raw, measured = np.array([p[0] for p in fit]), np.array([p[1] for p in fit])
        scale, other = np.polyfit(raw, measured, 1) if len(fit) > 1 and np.ptp(raw) > 0 else (0.0, 0.0)
        if scale <= 0:
            scale, other = 1.0, float(np.mean(measured - raw))
        return replace(self, scale=float(scale), other_ms=float(other), fit=fit)

    def uncalibrated(self) -> LatencyTable:
        """This table without its whole-network fit: `predict_ms` on it gives a network's sum of conv ms."""
        return replace(self, scale=1.0, other_ms=0.0, fit=())


def predict_ms(table: LatencyTable, graph: Graph) -> float:
    """Predicted ms of a (pruned) graph: each conv priced on the profiled curve of its shape with the smallest full
    widths that cover it (a pruned conv matches its original), the sum through the table's `whole_ms`."""
    by_shape: dict[Shape, list[Curve]] = {}
    for curve in table.curves.values():
        by_shape.setdefault(curve.shape, []).append(curve)
    total = 0.0
    for conv in graph.convs:
        fitting = [c for c in by_shape.get(Shape.of(conv), []) if c.in_full >= conv.in_channels
                   and c.out_full >= conv.filters]
        if not fitting:
            raise PruneyoloError(f"{graph.path}: layer {conv.index} ({conv.in_channels}->{conv.filters}, "
                                 f"{conv.size}x{conv.size} on {conv.in_shape[1]}x{conv.in_shape[2]}) matches no "
                                 "profiled layer; profile the cfg it was pruned from at the same --size")
        curve = min(fitting, key=lambda c: (c.in_full * c.out_full, c.in_full))
        total += curve.ms(conv.in_channels, conv.filters, table.blocked)
    return table.whole_ms(total)


# --- one-layer IRs ------------------------------------------------------------------------------------------------

def activation_op(name: str, x):
    """The opset op of a darknet activation (linear and unlisted ones: none)."""
    from openvino import opset13 as ops

    table = {"leaky": lambda: ops.prelu(x, ops.constant(np.float32([0.1]))), "relu": lambda: ops.relu(x),
             "logistic": lambda: ops.sigmoid(x), "mish": lambda: ops.mish(x), "swish": lambda: ops.swish(x),
             "tanh": lambda: ops.tanh(x), "relu6": lambda: ops.clamp(x, 0.0, 6.0),
             "hardswish": lambda: ops.hswish(x), "elu": lambda: ops.elu(x, 1.0), "gelu": lambda: ops.gelu(x, "tanh")}
    return table[name]() if name in table else x


def conv_model(shape: Shape, in_width: int, out_width: int, storage: str) -> ov.Model:
    """One conv + bias + activation on a random input of its real size: weights stored as `storage` (fp16: a
    Convert, int8: FakeQuantize on input and weights, as quantized IRs hold them)."""
    from openvino import opset13 as ops

    groups = shape.groups if in_width % shape.groups == 0 and out_width % shape.groups == 0 else 1
    rng = np.random.default_rng(0)
    source = ops.parameter([1, in_width, shape.height, shape.width], ov.Type.f32, name="x")
    kernel = rng.uniform(-1, 1, (out_width, in_width // groups, shape.size, shape.size)).astype(np.float32)
    x, w = source, ops.constant(kernel)
    if storage == "fp16":
        w = ops.convert(ops.constant(kernel.astype(np.float16)), ov.Type.f32)
    elif storage == "int8":
        low, high = ops.constant(np.float32(-1)), ops.constant(np.float32(1))
        x = ops.fake_quantize(x, low, high, low, high, 256)
        w = ops.fake_quantize(w, low, high, low, high, 255)
    pads = [shape.padding, shape.padding]
    dilations = [shape.dilation, shape.dilation]
    if groups > 1:
        w = ops.reshape(w, ops.constant(np.int64([groups, out_width // groups, in_width // groups, shape.size,
                                                  shape.size])), False)
        y = ops.group_convolution(x, w, list(shape.stride), pads, pads, dilations)
    else:
        y = ops.convolution(x, w, list(shape.stride), pads, pads, dilations)
    y = ops.add(y, ops.constant(rng.uniform(-1, 1, (1, out_width, 1, 1)).astype(np.float32)))
    return ov.Model([activation_op(shape.activation, y)], [source], "conv")


def random_inputs(compiled: ov.CompiledModel) -> dict:
    """A random input of the compiled model's first port (u8 images or f32 tensors)."""
    port = compiled.input(0)
    dtype = np.uint8 if port.get_element_type() == ov.Type.u8 else np.float32
    data = np.random.default_rng(0).uniform(0, 255 if dtype == np.uint8 else 1, list(port.get_shape()))
    return {0: data.astype(dtype)}


def median_ms(core: ov.Core, model: ov.Model, device: str, precision: str | None, seconds: float,
              inputs: dict | None = None) -> tuple[float, str]:
    """(median ms of back-to-back sync calls at the LATENCY hint, what ran) of a model on a random input."""
    compiled = core.compile_model(model, device, compile_config("LATENCY", precision))
    value = statistics.median(request_latencies(compiled, inputs or random_inputs(compiled), seconds))
    ran = ran_at(compiled)
    del compiled
    return value, ran


def conv_node_ms(core: ov.Core, model: ov.Model, device: str, precision: str | None, seconds: float) -> float:
    """Median over back-to-back sync calls (LATENCY hint) of the model's conv nodes' own time by the per-layer
    counters: what the conv costs inside a network, without the reorders and the call around it."""
    compiled = core.compile_model(model, device, {**compile_config("LATENCY", precision), "PERF_COUNT": True})
    request, inputs, times = compiled.create_infer_request(), random_inputs(compiled), []

    def call():
        request.infer(inputs)
        times.append(sum(node.real_time.total_seconds() for node in request.profiling_info
                         if node.node_type in CONV_NODES) * 1e3)

    sync_latencies(call, seconds)
    if not any(times):
        raise PruneyoloError(f"{device} reports no per-layer time for a convolution (PERF_COUNT), so its layers "
                             "cannot be profiled; time whole networks instead (prune --target-ms without --allocate)")
    return statistics.median(times[1:])


def interleaved_ms(core: ov.Core, models: dict[str, ov.Model], device: str, precision: str | None,
                   seconds: float) -> dict[str, float]:
    """`turns_ms` of the models compiled for sync calls (LATENCY hint)."""
    return turns_ms({name: core.compile_model(model, device, compile_config("LATENCY", precision))
                     for name, model in models.items()}, seconds)


def turns_ms(compiled: dict[str, ov.CompiledModel], seconds: float) -> dict[str, float]:
    """Median ms per model of sync calls, the models taking turns for `seconds` in all, each run BURST times in a
    row and the first (caches cold from the others) not timed: a machine whose speed drifts slows each of them
    alike (the ratio of two equal networks timed so stays within 1.6% on a VM whose speed moves 40%)."""
    calls = {name: functools.partial(one.create_infer_request().infer, random_inputs(one))
             for name, one in compiled.items()}
    times: dict[str, list[float]] = {name: [] for name in compiled}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or min(map(len, times.values())) < 3:
        for name, call in calls.items():
            for index in range(BURST):
                start = time.perf_counter()
                call()
                if index:
                    times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


@dataclass(frozen=True)
class Reference:
    """A model whose latency is a budget (`prune --target-like`): `ms` is its median when first timed, the scale
    every candidate timed beside it is reported on; `ran` is what it ran at (candidates run at the same)."""

    name: str
    graph: Graph
    model: ov.Model
    ms: float
    ran: str

    @staticmethod
    def timed(name: str, graph: Graph, model: ov.Model, device: str, precision: str | None,
              seconds: float) -> Reference:
        compiled = ov.Core().compile_model(model, device, compile_config("LATENCY", precision))
        return Reference(name, graph, model, turns_ms({name: compiled}, seconds)[name], ran_at(compiled))

    def beside(self, model: ov.Model, device: str, precision: str | None, seconds: float) -> float:
        """A candidate's ms timed in turns with the reference (interleaved_ms), on the reference's first-timed
        scale: the ratio of the two survives the machine's drift."""
        both = interleaved_ms(ov.Core(), {"reference": self.model, "candidate": model}, device, precision,
                              2 * seconds)
        return self.ms * both["candidate"] / both["reference"]


# --- profiling ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One conv's measurements: which widths of each axis (empty: that axis never changes)."""

    shape: Shape
    in_full: int
    out_full: int
    out_widths: tuple[int, ...]
    in_widths: tuple[int, ...]

    @property
    def points(self) -> list[tuple[int, int]]:
        return ([(self.in_full, self.out_full)] + [(self.in_full, w) for w in self.out_widths if w != self.out_full]
                + [(w, self.out_full) for w in self.in_widths if w != self.in_full])


def jobs(graph: Graph, step: int) -> dict[int, Job]:
    """Per conv, what to measure: output widths if its group can narrow, input widths if any input channel can."""
    constraints = channel_constraints(graph)
    prunable = set(constraints.prunable)
    origins = channel_origins(graph)
    result = {}
    for conv in graph.convs:
        source = conv.inputs[0]
        narrows_in = conv.groups == 1 and source >= 0 and bool(prunable & set(origins[source][:, 0].tolist()))
        out_widths = width_grid(conv.filters, step) if conv.index in prunable else ()
        in_widths = width_grid(conv.in_channels, step) if narrows_in else ()
        result[conv.index] = Job(Shape.of(conv), conv.in_channels, conv.filters, out_widths, in_widths)
    return result


@dataclass(frozen=True)
class Target:
    """Where a table is measured: device, its full name, precision, weight storage and OpenVINO version."""

    device: str
    device_name: str
    precision: str | None
    storage: str
    version: str

    @staticmethod
    def on(core: ov.Core, device: str, precision: str | None, storage: str) -> Target:
        from pruneyolo.runner.adapter import check_device

        check_device(core.available_devices, device)
        precision = precision and inference_precision(precision)
        name = core.get_property(device, "FULL_DEVICE_NAME")
        return Target(device, str(name), precision, weight_storage(storage), ov.__version__)

    def cache_file(self, what: object) -> Path:
        """The cache file of a measurement keyed by this target and `what` (a layer or a network signature)."""
        key = json.dumps([METHOD, self.device_name, self.precision or "default", self.storage, self.version, what],
                         sort_keys=True, default=str)
        return cache_root() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def read_cache(path: Path) -> dict | None:
    """A cached measurement, None if absent or unreadable (it is measured again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def measure_job(core: ov.Core, target: Target, job: Job, seconds: float, advance: Callable[[], None]) -> dict:
    """{'full', 'out', 'in'} ms of a job's points."""
    found: dict = {"out": {}, "in": {}}
    for in_width, out_width in job.points:
        ms = conv_node_ms(core, conv_model(job.shape, in_width, out_width, target.storage), target.device,
                          target.precision, seconds)
        if (in_width, out_width) == (job.in_full, job.out_full):
            found["full"] = ms
        elif in_width == job.in_full:
            found["out"][str(out_width)] = ms
        else:
            found["in"][str(in_width)] = ms
        advance()
    return found


def curve_of(job: Job, found: dict) -> Curve:
    """A job's curve from its measurements."""
    def widths(values: dict) -> dict[int, float]:
        return {int(width): float(ms) for width, ms in values.items()}

    return Curve(job.shape, job.in_full, job.out_full, float(found["full"]), widths(found["out"]), widths(found["in"]))


def profile(graph: Graph, device: str = "CPU", precision: str | None = None, storage: str = "fp32",
            step: int = 16, seconds: float = 0.02, progress: bool = True, fit: bool = True,
            fit_seconds: float = 2.0) -> LatencyTable:
    """Profile every conv of a graph (cached per layer), then (fit=True) fit the table to whole networks, each
    timed for `fit_seconds`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    core = ov.Core()
    target = Target.on(core, device, precision, storage)
    todo = jobs(graph, step)
    found: dict[Job, dict] = {}
    for job in set(todo.values()):
        cached = read_cache(target.cache_file(asdict(job)))
        if cached and {"full", "out", "in"} <= set(cached):
            found[job] = cached
    missing = sorted(set(todo.values()) - set(found), key=lambda j: (j.shape.height, j.in_full, j.out_full),
                     reverse=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress or not missing, transient=True) as bar:
        task = bar.add_task(f"profiling convs on {device}", total=sum(len(job.points) for job in missing))
        for job in missing:
            found[job] = measure_job(core, target, job, seconds, lambda: bar.advance(task))
            atomic_write(target.cache_file(asdict(job)), json.dumps(found[job]))
    table = LatencyTable(device, target.device_name, target.precision or "default", target.storage, target.version,
                         {conv: curve_of(job, found[job]) for conv, job in todo.items()})
    return calibrate(table, graph, core, target, fit_seconds, progress=progress) if fit else table


# --- whole networks -------------------------------------------------------------------------------------------------

def network_model(graph: Graph, weights: DarknetWeights | None, storage: str = "fp32",
                  calibration: Calibration | None = None) -> ov.Model:
    """A graph's IR built as `pruneyolo convert` builds it (int8: quantized on `calibration`, by default a few
    synthetic scenes)."""
    from pruneyolo.export.build import IrOptions, build_ir

    storage = weight_storage(storage)
    if storage == "int8":
        calibration = calibration or Calibration(scenes=TIMING_SCENES)
    return build_ir(graph, weights, IrOptions(storage=storage, calibration=calibration if storage == "int8" else None)).model


def network_ms(graph: Graph, weights: DarknetWeights | None, device: str = "CPU", precision: str | None = None,
               storage: str = "fp32", seconds: float = 3.0, calibration: Calibration | None = None,
               core: ov.Core | None = None) -> tuple[float, str]:
    """(median ms at the LATENCY hint, what ran) of a graph's IR (network_model)."""
    hint = inference_precision(precision) if precision and precision != "default" else None
    return median_ms(core or ov.Core(), network_model(graph, weights, storage, calibration), device, hint, seconds)


def uniform_graph(graph: Graph, table: LatencyTable, keep: float) -> Graph:
    """The graph with each tie group cut to the grid width nearest `keep` of its width (equal slices), first
    channels kept: a network for the whole-network fit."""
    constraints = channel_constraints(graph)
    masks = {conv.index: np.ones(conv.filters, bool) for conv in graph.convs}
    for group in constraints.groups:
        slices, full = constraints.slices[group[0]], graph.nodes[group[0]].filters
        fitting = [w for w in table.grid(group[0]) if w % slices == 0] or [full]
        width = min(fitting, key=lambda w: (abs(w - keep * full), -w))
        mask = np.zeros((slices, full // slices), bool)
        mask[:, :width // slices] = True
        for conv in group:
            masks[conv] = mask.reshape(-1)
    return build_graph(prune_sections(graph, masks), graph.path, graph.size, graph.dialect)


def calibrate(table: LatencyTable, graph: Graph, core: ov.Core, target: Target, seconds: float = 2.0,
              keeps: tuple[float, ...] = CALIBRATION_KEEPS, progress: bool = True) -> LatencyTable:
    """Fit scale and other_ms to whole networks at uniform widths `keeps` (random weights), timed together by
    interleaved_ms for `seconds` each (cached per target and set of networks)."""
    from contextlib import nullcontext

    from rich.console import Console

    raw = table.uncalibrated()
    networks = [uniform_graph(graph, table, keep) for keep in keeps]
    path = target.cache_file(["networks", [format_cfg(network.sized_sections()) for network in networks]])
    cached = read_cache(path)
    if cached is None or len(cached.get("ms", ())) != len(networks):
        status = Console(stderr=True).status(f"timing the whole network at {', '.join(map(str, keeps))} of its widths")
        with status if progress else nullcontext():
            models = {str(index): network_model(network, None, target.storage) for index, network in enumerate(networks)}
            measured = interleaved_ms(core, models, target.device, target.precision, seconds * len(networks))
        cached = {"ms": [measured[str(index)] for index in range(len(networks))]}
        atomic_write(path, json.dumps(cached))
    fit = tuple((predict_ms(raw, network), float(ms)) for network, ms in zip(networks, cached["ms"], strict=True))
    return table.calibrated(fit)


def table_view(table: LatencyTable, graph: Graph):
    """The profile as a rich table: one row per conv, its full-width ms and the output widths where its time steps."""
    from rich.table import Table

    view = Table(title=f"{Path(graph.path).name} @ {graph.size[0]}x{graph.size[1]} on {table.device} "
                       f"({table.device_name}), precision {table.precision}, {table.storage} weights, OpenVINO "
                       f"{table.version}")
    for header in ("layer", "kernel", "input", "in -> out", "ms (full)", "share", "output widths where it steps"):
        view.add_column(header, justify="left" if header.startswith("output") else "right")
    total = sum(curve.full_ms for curve in table.curves.values()) or 1.0
    for conv, curve in table.curves.items():
        shape = curve.shape
        steps = curve.steps()
        view.add_row(str(conv), f"{shape.size}x{shape.size}/{shape.stride[1]}", f"{shape.width}x{shape.height}",
                     f"{curve.in_full} -> {curve.out_full}", f"{curve.full_ms:.3f}", f"{100 * curve.full_ms / total:.1f}%",
                     " ".join(map(str, steps)) if len(curve.out_ms) > 1 else "fixed")
    return view
