"""`prune --allocate latency` to a budget: allocate on the latency table, measure the pruned IR, and when the
measurement misses (or leaves much of the budget unused), allocate again to a target scaled by how far the
prediction was off (at most `rounds` times).
Also the global threshold's frontier on the same table, the search's table and its frontier chart."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pruneyolo.bench.budget import MAX_FLOORED_PERCENT, Budget, Measure, Measurement
from pruneyolo.bench.latency import LatencyTable, predict_ms
from pruneyolo.darknet.graph import Graph, build_graph
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.files import write_png
from pruneyolo.prune.allocate import Allocation, allocate, apply_allocation, threshold_importance
from pruneyolo.prune.pruning import (
    PruneResult,
    abs_gammas,
    channel_constraints,
    channel_masks,
    largest_safe_percent,
    prune_sections,
)

ROUNDS = 3
SLACK = 0.03  # a met allocation more than this much under the budget is retargeted to use what is left


@dataclass(frozen=True)
class AllocTrial:
    """One allocation: the predicted-ms target it was made for, its prediction, measurement and what it keeps."""

    target_ms: float
    allocation: Allocation
    params: int
    bflops: float
    measurement: Measurement
    measured_ms: float  # per inference: measured (LATENCY), or 1000 / inferences/s (THROUGHPUT)
    achieved: float
    met: bool


@dataclass(frozen=True)
class AllocSearch:
    """Every trial, the chosen one with its pruned model (None when none met), and both frontiers on the table:
    (predicted ms, importance kept) of the allocation's descent and of global thresholds."""

    budget: Budget
    trials: list[AllocTrial]
    chosen: AllocTrial | None
    result: PruneResult | None
    frontier: list[tuple[float, float]]
    global_frontier: list[tuple[float, float, float]]  # (percent, predicted ms, importance kept)


def inference_ms(budget: Budget) -> float:
    """The budget as ms per inference: its ms over the mosaics, or (fps budgets) 1000 / (fps x mosaics), the
    latency that rate would need from one request (an approximation: THROUGHPUT runs several at once)."""
    return budget.ms / budget.mosaics if budget.ms else 1e3 / (budget.fps * budget.mosaics)


def allocate_to_budget(graph: Graph, weights: DarknetWeights, table: LatencyTable, budget: Budget, measure: Measure,
                       layer_keep: float | None = None, round_to: int = 1, rounds: int = ROUNDS,
                       log: Callable[[str], None] = lambda _: None, start_ms: float | None = None) -> AllocSearch:
    """Allocate to `start_ms` predicted (default: the budget's ms per inference), measure, and retarget by how far
    the measurement fell from the budget, on a miss or when more than SLACK of it was left unused; the chosen trial
    is the met one with the most importance kept."""
    goal = inference_ms(budget)
    target, trials = start_ms or goal, []
    descent = allocate(graph, weights, table, target, layer_keep, round_to)
    frontier = descent.frontier
    chosen, result = None, None
    low, high = 0.0, math.inf  # the largest target that met, the smallest that missed
    measured: dict[tuple, AllocTrial] = {}  # a target on the same latency step gives the same allocation
    for _ in range(4 * rounds):
        if descent.allocation is None or len(trials) == rounds:
            break
        key = (tuple(sorted(descent.allocation.widths.items())), tuple(b.first for b in descent.allocation.removed))
        trial = measured.get(key)
        if trial is None:
            log(f"allocation for {target:.2f} ms predicted: pruning, converting and measuring")
            pruned = apply_allocation(graph, weights, descent.allocation)
            measurement = measure(pruned)
            achieved = budget.achieved(measurement.value)
            measured_ms = measurement.value if budget.ms else 1e3 / measurement.value
            trial = AllocTrial(target, descent.allocation, pruned.graph.params, pruned.graph.bflops, measurement,
                               measured_ms, achieved, budget.met(achieved))
            trials.append(trial)
            measured[key] = trial
            if trial.met and (chosen is None or trial.allocation.importance > chosen.allocation.importance):
                chosen, result = trial, pruned
            if trial.met and measured_ms >= goal * (1 - SLACK):
                break
        low, high = (max(low, target), high) if trial.met else (low, min(high, target))
        target = retarget(trial.allocation.predicted_ms, target, goal / trial.measured_ms, low, high)
        if target is None:
            break
        descent = allocate(graph, weights, table, target, layer_keep, round_to)
    return AllocSearch(budget, trials, chosen, result, frontier,
                       global_frontier(graph, weights, table, layer_keep, round_to))


def retarget(predicted: float, target: float, ratio: float, low: float, high: float) -> float | None:
    """The next predicted-ms target: the last allocation's prediction scaled by budget over measured (`ratio`), else
    the last target so scaled, kept strictly between the largest target that met and the smallest that missed
    (else their middle), so that coarse latency steps cannot send the search back and forth; None when no target
    is left between them."""
    for proposed in (predicted * ratio, target * ratio):
        if low < proposed < high:
            return proposed
    return (low + high) / 2 if high < math.inf and high - low > 1e-3 * high else None


def global_frontier(graph: Graph, weights: DarknetWeights, table: LatencyTable, layer_keep: float | None,
                    round_to: int, step: float = 0.05) -> list[tuple[float, float, float]]:
    """(percent, predicted ms, importance kept) of global-threshold prunes (no blocks removed) every `step`."""
    gammas = abs_gammas(weights, channel_constraints(graph).prunable)
    top = largest_safe_percent(gammas) if layer_keep is None else MAX_FLOORED_PERCENT
    points = []
    for percent in np.arange(0, top + 1e-9, step):
        masks, _, _ = channel_masks(graph, weights, float(percent), layer_keep, round_to)
        pruned = build_graph(prune_sections(graph, masks), graph.path, graph.size, graph.dialect)
        points.append((round(float(percent), 4), predict_ms(table, pruned), threshold_importance(graph, weights, masks)))
    return points


def allocation_table(found: AllocSearch, title: str):
    """The trials as a rich table, predicted beside measured, the chosen one in bold."""
    from rich.table import Table

    budget = found.budget
    table = Table(title=title, caption=f"budget: {budget.text}; {inference_ms(budget):.2f} ms per inference")
    for header in ("target ms", "predicted ms", "measured ms", "error", "importance kept", "blocks removed",
                   "params", "BFLOPs", "ran as", "FPS per stream" if budget.fps else "ms per frame set", "meets"):
        table.add_column(header, justify="right")
    for trial in found.trials:
        allocation = trial.allocation
        error = allocation.predicted_ms / trial.measured_ms - 1
        table.add_row(f"{trial.target_ms:.2f}", f"{allocation.predicted_ms:.2f}", f"{trial.measured_ms:.2f}",
                      f"{100 * error:+.0f}%", f"{100 * allocation.importance:.1f}%", str(len(allocation.removed)),
                      f"{trial.params:,}", f"{trial.bflops:.3f}", trial.measurement.precision, f"{trial.achieved:.1f}",
                      "yes" if trial.met else "no", style="bold green" if trial is found.chosen else None)
    return table


def plot_frontier(found: AllocSearch, path, title: str):
    """Importance kept against predicted ms: the allocation's descent and global thresholds, measured trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    ms, kept = zip(*found.frontier, strict=True)
    axes.plot(ms, [100 * k for k in kept], label="allocation (predicted)", color="tab:blue")
    _, global_ms, global_kept = zip(*found.global_frontier, strict=True)
    axes.plot(global_ms, [100 * k for k in global_kept], marker=".", label="global threshold (predicted)",
              color="tab:orange")
    if found.trials:
        axes.plot([t.measured_ms for t in found.trials], [100 * t.allocation.importance for t in found.trials],
                  marker="o", linestyle="none", color="tab:blue", fillstyle="none", label="allocation (measured)")
    axes.axvline(inference_ms(found.budget), color="tab:red", linestyle="--", label="budget")
    axes.set_xlabel("ms per inference")
    axes.set_ylabel("importance kept (% of sum |gamma|)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return write_png(path, figure)
