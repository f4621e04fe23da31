"""Prune to a budget: the least pruning whose converted IR sustains a frame rate (or a latency) on a device.

Candidates are a grid of percents from 0 to the largest safe one. A larger percent is assumed never slower, so a
bisection finds the smallest percent that meets the budget: both ends first, then halving the interval between
the largest percent that missed and the smallest that met. Each trial prunes, converts and measures the IR on the
device; `measure` is a parameter so the search can be driven by any measurement.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pruneyolo.darknet.graph import Graph
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.errors import ArgumentError
from pruneyolo.export.precision import inference_precision, weight_storage
from pruneyolo.files import write_png
from pruneyolo.prune.pruning import (
    PruneResult,
    abs_gammas,
    channel_constraints,
    choose_blocks,
    largest_safe_percent,
    prune,
    remove_blocks,
    residual_blocks,
)

if TYPE_CHECKING:
    from pruneyolo.bench.latency import Reference
    from pruneyolo.export.quantize import Calibration


def mosaics_for(streams: int, tiles: int) -> int:
    """Inferences that serve one frame of each of `streams` tiled `tiles` to a mosaic."""
    return math.ceil(streams / tiles)


@dataclass(frozen=True)
class Budget:
    """What a model must sustain: `fps` frames/s on each of `streams` streams, or one frame of every stream within
    `ms`; the streams are tiled into mosaics of `tiles`, so `mosaics` inferences serve one frame of each. A budget
    `like` another model is that model's ms, met within `tolerance` (candidates are timed in turns with it)."""

    fps: float | None = None
    ms: float | None = None
    streams: int = 1
    tiles: int = 1
    like: str | None = None
    tolerance: float = 0.0

    def __post_init__(self):
        if (self.fps is None) == (self.ms is None):
            raise ArgumentError(("target_fps", "target_ms"), "(give exactly one)")
        if self.like and self.ms is None:
            raise ArgumentError("like", "is a latency budget: give the reference's ms as target_ms")
        name, value = ("target_fps", self.fps) if self.fps is not None else ("target_ms", self.ms)
        if not value > 0:
            raise ArgumentError(name, f"{value:g} must be > 0")

    @property
    def mosaics(self) -> int:
        return mosaics_for(self.streams, self.tiles)

    @property
    def hint(self) -> str:
        """The OpenVINO performance hint the budget is measured at."""
        return "THROUGHPUT" if self.fps else "LATENCY"

    def achieved(self, measured: float) -> float:
        """Per-stream frames/s from inferences/s (fps budgets), or ms per frame of every stream from the median ms
        of one inference (ms budgets)."""
        return measured / self.mosaics if self.fps else measured * self.mosaics

    def met(self, achieved: float) -> bool:
        return achieved >= self.fps if self.fps else achieved <= self.ms * (1 + self.tolerance)

    @property
    def text(self) -> str:
        target = f"{self.fps:g} FPS per stream" if self.fps else f"{self.ms:g} ms per frame set"
        if self.like:
            target = (f"as fast as {self.like} ({self.ms:.2f} ms per frame set when first timed, met within "
                      f"{100 * self.tolerance:g}%; each candidate timed in turns with it)")
        return f"{target}, {self.streams} stream{'s' * (self.streams > 1)} in {self.mosaics} mosaic" \
               f"{'s' * (self.mosaics > 1)} of {self.tiles} tile{'s' * (self.tiles > 1)}"


@dataclass(frozen=True)
class Measurement:
    """One IR measured on the device: inferences/s (THROUGHPUT) or median ms (LATENCY), what ran, and mAP50."""

    value: float
    precision: str = ""
    map50: float | None = None


Measure = Callable[[PruneResult], Measurement]


@dataclass(frozen=True)
class Trial:
    """One candidate of the search, pruned, measured and held against the budget."""

    shortcuts: int
    percent: float
    params: int
    bflops: float
    measurement: Measurement
    achieved: float
    met: bool


@dataclass(frozen=True)
class Search:
    """Every trial in the order run, and the chosen one with its pruned model (None when nothing met)."""

    budget: Budget
    trials: list[Trial]
    chosen: Trial | None
    result: PruneResult | None


MAX_FLOORED_PERCENT = 0.99  # with a per-layer floor every percent is allowed; the grid stops here


def safe_percent(graph: Graph, weights: DarknetWeights, shortcuts: int) -> float:
    """The largest percent that leaves every layer a channel, after removing `shortcuts` residual blocks."""
    if shortcuts:
        graph, weights = remove_blocks(graph, weights, choose_blocks(residual_blocks(graph, weights), shortcuts))
    return largest_safe_percent(abs_gammas(weights, channel_constraints(graph).prunable))


def percent_grid(top: float, step: float) -> list[float]:
    """0, step, 2 step, ... up to `top`."""
    if not 0 < step < 1:
        raise ArgumentError("step", f"{step:g} must be in (0, 1)")
    return [round(i * step, 6) for i in range(math.floor(top / step + 1e-9) + 1)]


def smallest_passing(candidates: list[float], passes: Callable[[float], bool]) -> int | None:
    """Index of the smallest candidate that passes, by bisection (passing is assumed monotone); None if the last
    fails. Both ends are tried first; every candidate tried below the answer failed."""
    if passes(candidates[0]):
        return 0
    if not passes(candidates[-1]):
        return None
    low, high = 0, len(candidates) - 1
    while high - low > 1:
        middle = (low + high) // 2
        if passes(candidates[middle]):
            high = middle
        else:
            low = middle
    return high


def trial(graph: Graph, weights: DarknetWeights, budget: Budget, measure: Measure, shortcuts: int, percent: float,
          layer_keep: float | None, round_to: int) -> Trial:
    """Prune at one candidate, measure it and hold it against the budget."""
    result = prune(graph, weights, percent, layer_keep, shortcuts, round_to=round_to)
    measurement = measure(result)
    achieved = budget.achieved(measurement.value)
    return Trial(shortcuts, percent, result.graph.params, result.graph.bflops, measurement, achieved,
                 budget.met(achieved))


def search(graph: Graph, weights: DarknetWeights, budget: Budget, measure: Measure, shortcut_counts=(0,),
           step: float = 0.01, layer_keep: float | None = None, round_to: int = 1,
           log: Callable[[str], None] = lambda _: None) -> Search:
    """For each shortcut count, the smallest percent on the grid whose IR meets the budget; of those, the one with
    the best mAP50 when measured, else the most parameters kept (ties: fewer shortcuts)."""
    trials: list[Trial] = []
    winners: list[Trial] = []
    for shortcuts in shortcut_counts:
        def passes(percent: float, shortcuts: int = shortcuts) -> bool:
            log(f"shortcuts {shortcuts}, percent {percent:g}: pruning, converting and measuring")
            trials.append(trial(graph, weights, budget, measure, shortcuts, percent, layer_keep, round_to))
            return trials[-1].met

        top = safe_percent(graph, weights, shortcuts) if layer_keep is None else MAX_FLOORED_PERCENT
        candidates = percent_grid(top, step)
        found = smallest_passing(candidates, passes)
        if found is not None:
            winners.append(next(t for t in trials if t.shortcuts == shortcuts and t.percent == candidates[found]))
    if not winners:
        return Search(budget, trials, None, None)
    chosen = max(winners, key=lambda t: (t.measurement.map50 or 0.0, t.params, -t.shortcuts))
    return Search(budget, trials, chosen, prune(graph, weights, chosen.percent, layer_keep, chosen.shortcuts,
                                                round_to=round_to))


# --- measuring on a device ----------------------------------------------------------------------------------------

def ir_speed(xml: Path, device: str, hint: str, precision: str | None, seconds: float) -> tuple[float, str]:
    """(inferences/s with a full AsyncInferQueue at THROUGHPUT, or median ms of sync calls at LATENCY; what ran)
    of an IR on a random u8 frame."""
    import openvino as ov

    from pruneyolo.bench import timing as bench
    from pruneyolo.runner.adapter import compile_config, ran_at

    compiled = ov.Core().compile_model(xml, device, compile_config(hint, precision))
    image = np.random.default_rng(0).integers(0, 256, list(compiled.input(0).get_shape()), dtype=np.uint8)
    if hint == "THROUGHPUT":
        value = bench.async_rate(compiled, {0: image}, seconds)
    else:
        request = compiled.create_infer_request()
        value = statistics.median(bench.sync_latencies(lambda: request.infer({0: image}), seconds))
        del request  # before the compiled model
    return value, ran_at(compiled)


def ir_measure(workdir: Path, budget: Budget, device: str = "CPU", storage: str = "fp32",
               precision: str | None = None, seconds: float = 3.0, calibration: Calibration | None = None,
               data: Path | None = None, reference: Reference | None = None) -> Measure:
    """A `measure` that builds each pruned model's IR under `workdir` with weight `storage` (int8: quantized on
    `calibration`, by default synthetic scenes), times it on `device` at the budget's hint and inference
    `precision` (None: the device default), or in turns with a `reference` model, and scores it on `data`."""
    from pruneyolo.accuracy import evaluate, ir_predictor
    from pruneyolo.bench.timing import SYNTHETIC_CALIBRATION
    from pruneyolo.export.build import IrOptions, build_ir
    from pruneyolo.export.convert import save_ir

    storage = weight_storage(storage)
    hint = precision and inference_precision(precision)
    calibration = (calibration or SYNTHETIC_CALIBRATION) if storage == "int8" else None
    numbers = count()

    def measure(result: PruneResult) -> Measurement:
        built = build_ir(result.graph, result.weights, IrOptions(storage=storage, calibration=calibration))
        xml = save_ir(built.model, Path(workdir) / f"trial{next(numbers)}" / f"{storage}.xml", storage)
        if reference is None:
            value, ran = ir_speed(xml, device, budget.hint, hint, seconds)
        else:
            value, ran = reference.beside(built.model, device, hint, seconds), reference.ran
        map50 = evaluate(ir_predictor(xml, device), data).map50 if data else None
        return Measurement(value, ran, map50)

    return measure


# --- reporting ----------------------------------------------------------------------------------------------------

def search_table(found: Search, title: str):
    """The trials as a rich table, sorted by shortcuts and percent, the chosen one in bold."""
    from rich.table import Table

    budget = found.budget
    measured, achieved = (("inf/s", "FPS per stream") if budget.fps else ("ms per inference", "ms per frame set"))
    with_map = any(t.measurement.map50 is not None for t in found.trials)
    several = len({t.shortcuts for t in found.trials}) > 1 or any(t.shortcuts for t in found.trials)
    table = Table(title=title, caption=f"budget: {budget.text}")
    headers = (["shortcuts"] * several + ["percent", "params", "BFLOPs", measured, achieved, "ran as", "meets"]
               + ["mAP50"] * with_map)
    for header in headers:
        table.add_column(header, justify="right")
    for trial in sorted(found.trials, key=lambda t: (t.shortcuts, t.percent)):
        cells = ([str(trial.shortcuts)] * several
                 + [f"{trial.percent:g}", f"{trial.params:,}", f"{trial.bflops:.3f}",
                    f"{trial.measurement.value:.{1 if budget.fps else 2}f}", f"{trial.achieved:.1f}",
                    trial.measurement.precision, "yes" if trial.met else "no"]
                 + ([f"{trial.measurement.map50:.4f}"] if with_map else []))
        table.add_row(*cells, style="bold green" if trial is found.chosen else None)
    return table


def plot_search(found: Search, path, title: str) -> Path:
    """Achieved FPS (or ms) against percent, one series per shortcut count, the budget line and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = found.budget
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for shortcuts in sorted({t.shortcuts for t in found.trials}):
        trials = sorted((t for t in found.trials if t.shortcuts == shortcuts), key=lambda t: t.percent)
        axes.plot([t.percent for t in trials], [t.achieved for t in trials], marker="o",
                  label=f"{shortcuts} residual blocks removed")
    axes.axhline(budget.fps or budget.ms, color="tab:red", linestyle="--", label=f"budget: {budget.text}")
    if found.chosen:
        axes.plot([found.chosen.percent], [found.chosen.achieved], marker="*", markersize=16, color="tab:green",
                  linestyle="none", label=f"chosen: percent {found.chosen.percent:g}")
    axes.set_xlabel("percent of prunable channels cut")
    axes.set_ylabel("FPS per stream" if budget.fps else "ms per frame set")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return write_png(path, figure)
