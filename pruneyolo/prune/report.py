"""Tables and plots about pruning: per-stage before/after, a percent sweep, two cfgs side by side, |gamma|."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from pruneyolo.darknet.graph import Conv, Graph, Node
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.files import write_png
from pruneyolo.prune.pruning import PruneResult, abs_gammas, channel_constraints, gamma_threshold, stride_of


@dataclass(frozen=True)
class SweepRow:
    """One written model of a sweep; columns read what they need from it (a benchmark can open its files)."""

    result: PruneResult
    cfg_path: Path
    weights_path: Path


SweepColumn = tuple[str, Callable[[SweepRow], str]]


def _ratio(after: float, before: float) -> str:
    return f"{after / before:.1%}" if before else "-"


def _threshold(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "none"


def _stage_totals(graph: Graph) -> dict[int, tuple[int, int, int, float]]:
    """stride -> (convs, conv channels, params, BFLOPs)."""
    totals: dict[int, tuple[int, int, int, float]] = {}
    for node in graph.nodes:
        convs, channels, params, bflops = totals.get(stride_of(graph, node), (0, 0, 0, 0.0))
        is_conv = isinstance(node, Conv)
        totals[stride_of(graph, node)] = (convs + is_conv, channels + (node.filters if is_conv else 0),
                                          params + node.params, bflops + node.bflops)
    return totals


def _count(count: int) -> str:
    """A parameter count in 3-4 characters: 203, 44.1k, 1.90M."""
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    return f"{count / 1e3:.1f}k" if count >= 1e3 else str(count)


def floor_note(result: PruneResult) -> str:
    """'at the --layer-keep floor: layer 12 (64 -> 1), ...' for the convs the threshold would have cut deeper
    ('' when none)."""
    if not result.floored:
        return ""
    layers = ", ".join(f"layer {conv} ({result.masks[conv].size} -> {int(result.masks[conv].sum())})"
                       for conv in result.floored)
    return f"at the --layer-keep floor: {layers}"


def stage_table(before: Graph, result: PruneResult) -> Table:
    """Per stage (stride): conv channels, params and BFLOPs before -> after, with totals and the threshold."""
    after = result.graph
    table = Table(title=f"prune {result.percent:g}: |gamma| threshold {_threshold(result.threshold)}"
                        + (f", {result.shortcuts} residual blocks removed" if result.shortcuts else "")
                        + (f", channel counts rounded up to multiples of {result.round_to}" if result.round_to > 1
                           else ""),
                  caption=f"params {_ratio(after.params, before.params)}, BFLOPs "
                          f"{_ratio(after.bflops, before.bflops)} of the original")
    for header in ("stage", "convs", "channels", "params", "BFLOPs"):
        table.add_column(header, justify="left" if header == "stage" else "right", no_wrap=True)
    old, new = _stage_totals(before), _stage_totals(result.graph)
    for stride in sorted(old):
        (convs, channels, params, bflops), (new_convs, new_channels, new_params, new_bflops) = \
            old[stride], new.get(stride, (0, 0, 0, 0.0))
        table.add_row(f"stride {stride}", f"{convs} -> {new_convs}", f"{channels} -> {new_channels}",
                      f"{_count(params)} -> {_count(new_params)}", f"{bflops:.3f} -> {new_bflops:.3f}")
    table.add_row("total", f"{len(before.convs)} -> {len(after.convs)}",
                  f"{sum(c.filters for c in before.convs)} -> {sum(c.filters for c in after.convs)}",
                  f"{_count(before.params)} -> {_count(after.params)}", f"{before.bflops:.3f} -> {after.bflops:.3f}",
                  style="bold")
    return table


def sweep_columns(original: Graph, original_weights: Path) -> list[SweepColumn]:
    """The standard sweep columns, as ratios of the original model."""
    weights_size = original_weights.stat().st_size
    return [
        ("percent", lambda row: f"{row.result.percent:g}"),
        ("threshold", lambda row: _threshold(row.result.threshold)),
        ("params", lambda row: f"{row.result.graph.params:,} ({_ratio(row.result.graph.params, original.params)})"),
        (".weights MB", lambda row: f"{row.weights_path.stat().st_size / 1e6:.1f} "
                                    f"({_ratio(row.weights_path.stat().st_size, weights_size)})"),
        ("BFLOPs", lambda row: f"{row.result.graph.bflops:.3f} ({_ratio(row.result.graph.bflops, original.bflops)})"),
    ]


def sweep_table(original: Graph, original_weights: Path, rows: list[SweepRow],
                extra_columns: list[SweepColumn] = ()) -> Table:
    """One row per pruned model (after one for the original); `extra_columns` append measurements."""
    columns = sweep_columns(original, original_weights) + list(extra_columns)
    table = Table(title=f"prune sweep of {Path(original.path).name}: {original.params:,} params, "
                        f"{original_weights.stat().st_size / 1e6:.1f} MB, {original.bflops:.3f} BFLOPs")
    for header, _ in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    return table


def _layer_cells(node: Node | None) -> list[str]:
    if node is None:
        return ["", "", "", "", ""]
    return [str(node.index), node.kind, str(node.out_channels), f"{node.params:,}" if node.params else "",
            f"{node.bflops:.3f}" if node.bflops else ""]


def aligned_layers(first: Graph, second: Graph) -> list[tuple[Node | None, Node | None]]:
    """Pairs of corresponding layers (None where one cfg has a layer the other lacks), matched by type."""
    kinds_a, kinds_b = [n.kind for n in first.nodes], [n.kind for n in second.nodes]
    pairs: list[tuple[Node | None, Node | None]] = []
    matcher = difflib.SequenceMatcher(a=kinds_a, b=kinds_b, autojunk=False)
    for tag, a_start, a_stop, b_start, b_stop in matcher.get_opcodes():
        a_nodes, b_nodes = first.nodes[a_start:a_stop], second.nodes[b_start:b_stop]
        if tag == "equal":
            pairs.extend(zip(a_nodes, b_nodes, strict=True))
        else:
            pairs.extend((node, None) for node in a_nodes)
            pairs.extend((None, node) for node in b_nodes)
    return pairs


def compare_table(first: Graph, second: Graph) -> Table:
    """Per-layer channels, params and BFLOPs of two cfgs side by side, then totals with B/A ratios."""
    table = Table(title=f"A = {first.path}\nB = {second.path}")
    for header in ("A", "type", "channels", "params", "BFLOPs", "B", "type", "channels", "params", "BFLOPs"):
        table.add_column(header, justify="left" if header == "type" else "right")
    for node_a, node_b in aligned_layers(first, second):
        style = None if node_a and node_b and node_a.out_channels == node_b.out_channels else "yellow"
        table.add_row(*_layer_cells(node_a), *_layer_cells(node_b), style=style)
    channels_a = sum(c.filters for c in first.convs)
    channels_b = sum(c.filters for c in second.convs)
    table.add_row("total", f"{len(first.nodes)} layers", str(channels_a), f"{first.params:,}",
                  f"{first.bflops:.3f}", "", f"{len(second.nodes)} layers",
                  f"{channels_b} ({_ratio(channels_b, channels_a)})",
                  f"{second.params:,} ({_ratio(second.params, first.params)})",
                  f"{second.bflops:.3f} ({_ratio(second.bflops, first.bflops)})", style="bold")
    return table


def stage_gammas(graph: Graph, weights: DarknetWeights) -> dict[int, np.ndarray]:
    """|gamma| of the prunable BN convs, by stage (stride)."""
    by_stride: dict[int, list[np.ndarray]] = {}
    for conv, values in abs_gammas(weights, channel_constraints(graph).prunable).items():
        by_stride.setdefault(stride_of(graph, graph.nodes[conv]), []).append(values)
    return {stride: np.concatenate(parts) for stride, parts in sorted(by_stride.items())}


def plot_gammas(graph: Graph, weights: DarknetWeights, path, percent: float | None = None) -> None:
    """Histogram of |gamma| overall and per stage as a PNG, with the threshold for `percent` drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = stage_gammas(graph, weights)
    panels = [("all prunable layers", np.concatenate(list(stages.values())))]
    panels += [(f"stride {stride}", values) for stride, values in stages.items()]
    threshold = gamma_threshold(stages, percent) if percent is not None else None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    bins = np.linspace(0, max(values.max() for _, values in panels), 60)
    for axis, (title, values) in zip(axes.flat, panels, strict=False):
        axis.hist(values, bins=bins, color="tab:blue")
        axis.set_yscale("log")
        axis.set_title(f"{title} ({len(values)} channels)", fontsize=9)
        axis.set_xlabel("|gamma|", fontsize=8)
        if threshold is not None and math.isfinite(threshold):
            axis.axvline(threshold, color="tab:red", linestyle="--", label=f"prune {percent:g}: {threshold:.3g}")
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(f"BatchNorm |gamma| of {Path(graph.path).name}", fontsize=10)
    figure.tight_layout()
    write_png(path, figure, dpi=100)
