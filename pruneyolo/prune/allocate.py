"""Allocate widths by latency: per tie group a kept width on the latency table's steps, and which residual blocks go,
for the most BatchNorm |gamma| kept under a predicted-latency budget.

A greedy descent from the unpruned model: each step takes the move that loses the least importance per predicted
millisecond saved, either narrowing one tie group to its next cheaper width on the table's grid or removing one
residual block, until the prediction meets the budget. Then every group is widened again to the top of its
latency step (the widest width that costs no more), so no width is kept that costs the same as a wider one.
Importance is the sum of |gamma| over the kept channels of every prunable conv; each group keeps its strongest
channels (its convs' largest |gamma|, per grouped-route slice). Ties break on the conv index: deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pruneyolo.darknet.graph import Graph, build_graph
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.errors import PruneyoloError
from pruneyolo.prune.pruning import (
    PruneResult,
    ResidualBlock,
    abs_gammas,
    channel_constraints,
    channel_origins,
    layer_floor,
    prune_sections,
    prune_weights,
    remove_blocks,
    residual_blocks,
)


class LatencyModel(Protocol):
    """What allocation needs of a device: a conv's ms at given input and output widths (original conv index), the
    widths its table measured, and a whole network's ms from its sum of conv ms (non-decreasing in it)."""

    def conv_ms(self, conv: int, in_width: int, out_width: int) -> float: ...

    def grid(self, conv: int) -> tuple[int, ...]: ...

    def whole_ms(self, conv_total: float) -> float: ...


@dataclass(frozen=True)
class Allocation:
    """Kept width per tie group (keyed by its first conv), removed residual blocks, and their prediction."""

    widths: dict[int, int]
    removed: tuple[ResidualBlock, ...]
    predicted_ms: float
    importance: float  # share of the total |gamma| of prunable convs kept
    masks: dict[int, np.ndarray] = field(repr=False)  # kept output channels of every conv, original numbering


@dataclass(frozen=True)
class Descent:
    """The allocation that met the budget (None if none can) and every state the descent passed: the frontier."""

    allocation: Allocation | None
    frontier: list[tuple[float, float]]  # (predicted ms, importance share), unpruned first


class Planner:
    """The state of one descent: tie groups with their candidate widths and masks, and the convs' costs."""

    def __init__(self, graph: Graph, weights: DarknetWeights, model: LatencyModel, layer_keep: float | None,
                 round_to: int, blocks: bool):
        if round_to < 1:
            raise PruneyoloError(f"--round {round_to} must be >= 1")
        self.graph, self.model = graph, model
        constraints = channel_constraints(graph)
        if not constraints.groups:
            raise PruneyoloError(f"{graph.path}: no conv can lose channels (pruning needs BatchNorm convs)")
        self.gammas = abs_gammas(weights, constraints.prunable)
        self.total = sum(float(values.sum()) for values in self.gammas.values())
        self.groups = {group[0]: group for group in constraints.groups}
        self.group_of = {conv: group[0] for group in constraints.groups for conv in group}
        self.slices = constraints.slices
        self.order = {key: np.max([self.gammas[conv] for conv in group], axis=0) for key, group in self.groups.items()}
        self.candidates = {key: self._candidates(key, layer_keep, round_to) for key in self.groups}
        self.inputs = self._input_parts()
        self.affected = {key: sorted(set(group) | {conv for conv, (_, parts) in self.inputs.items()
                                                     if any(source == key for source, _ in parts)})
                         for key, group in self.groups.items()}
        self.blocks = residual_blocks(graph, weights) if blocks else []
        self._masks: dict[tuple[int, int], np.ndarray] = {}
        self._counts: dict[tuple[int, int, int], int] = {}
        self.kept = {conv: {width: float(self.gammas[conv][self.mask(key, width)].sum())
                            for width in self.candidates[key]}
                     for key, group in self.groups.items() for conv in group}

    def _candidates(self, key: int, layer_keep: float | None, round_to: int) -> list[int]:
        """The group's widths on the table's grid, ascending: whole slices rounded to `round_to` (or the full
        width), at least the --layer-keep floor."""
        full, slices = len(self.order[key]), self.slices[key]
        floor = layer_floor(full, layer_keep)
        widths = {full} | {width for width in self.model.grid(key) if 0 < width < full and width % slices == 0
                           and (width // slices) % round_to == 0 and width >= floor}
        return sorted(widths)

    def _input_parts(self) -> dict[int, tuple[int, list[tuple[int, np.ndarray]]]]:
        """Per conv: input channels no group owns, and (group, its channels) for each group feeding it."""
        origins = channel_origins(self.graph)
        parts = {}
        for conv in self.graph.convs:
            source = conv.inputs[0]
            if source < 0:
                parts[conv.index] = (conv.in_channels, [])
                continue
            origin = origins[source]
            owners = np.array([self.group_of.get(int(owner), -1) for owner in origin[:, 0]])
            fixed = int((owners < 0).sum())
            fed = [(key, origin[owners == key, 1]) for key in sorted(set(owners.tolist()) - {-1})]
            parts[conv.index] = (fixed, fed)
        return parts

    def mask(self, key: int, width: int) -> np.ndarray:
        """The group's kept channels at `width`: the strongest of each slice."""
        if (key, width) not in self._masks:
            order, slices = self.order[key], self.slices[key]
            rows = order.reshape(slices, -1)
            mask = np.zeros_like(rows, bool)
            for row, scores in zip(mask, rows, strict=True):
                row[np.argsort(-scores, kind="stable")[:width // slices]] = True
            self._masks[key, width] = mask.reshape(-1)
        return self._masks[key, width]

    def in_width(self, conv: int, widths: dict[int, int]) -> int:
        fixed, fed = self.inputs[conv]
        total = fixed
        for key, channels in fed:
            cache = (conv, key, widths[key])
            if cache not in self._counts:
                self._counts[cache] = int(self.mask(key, widths[key])[channels].sum())
            total += self._counts[cache]
        return total

    def out_width(self, conv: int, widths: dict[int, int]) -> int:
        key = self.group_of.get(conv)
        return widths[key] if key is not None else self.graph.nodes[conv].filters

    def conv_ms(self, conv: int, widths: dict[int, int], gone: set[int]) -> float:
        if conv in gone:
            return 0.0
        return self.model.conv_ms(conv, self.in_width(conv, widths), self.out_width(conv, widths))

    def predicted_ms(self, widths: dict[int, int], gone: set[int]) -> float:
        return self.model.whole_ms(sum(self.conv_ms(conv.index, widths, gone) for conv in self.graph.convs))

    def group_importance(self, key: int, width: int, gone: set[int]) -> float:
        return sum(self.kept[conv][width] for conv in self.groups[key] if conv not in gone)

    def importance(self, widths: dict[int, int], gone: set[int]) -> float:
        return sum(self.group_importance(key, width, gone) for key, width in widths.items()) / self.total

    def affected_ms(self, key: int, widths: dict[int, int], gone: set[int]) -> float:
        return sum(self.conv_ms(conv, widths, gone) for conv in self.affected[key])

    def narrowing(self, key: int, widths: dict[int, int], gone: set[int]) -> tuple[float, float, int] | None:
        """(importance lost, ms saved, new width) of narrowing a group to its next strictly cheaper width."""
        if all(conv in gone for conv in self.groups[key]):
            return None
        before = self.affected_ms(key, widths, gone)
        candidates = self.candidates[key]
        current = widths[key]
        for width in reversed(candidates[:candidates.index(current)]):
            widths[key] = width
            saved = before - self.affected_ms(key, widths, gone)
            widths[key] = current
            if saved > 0:
                lost = self.group_importance(key, current, gone) - self.group_importance(key, width, gone)
                return lost, saved, width
        return None

    def removal(self, block: ResidualBlock, widths: dict[int, int], gone: set[int],
                left: dict[int, int]) -> tuple[float, float] | None:
        """(importance lost, ms saved) of removing a block, None when it is the last of its stage or gone."""
        if block.first in gone or left[block.stride] <= 1:
            return None
        convs = range(block.first, block.shortcut)
        saved = sum(self.conv_ms(conv, widths, gone) for conv in convs)
        lost = sum(self.kept[conv][widths[self.group_of[conv]]] for conv in convs if conv in self.group_of)
        return (lost, saved) if saved > 0 else None

    def widen(self, widths: dict[int, int], gone: set[int]) -> dict[int, int]:
        """Each group at the widest candidate that predicts no more than its current width (its step's top)."""
        widths = dict(widths)
        for key in sorted(widths):
            before, current = self.affected_ms(key, widths, gone), widths[key]
            for width in reversed(self.candidates[key]):
                if width <= current:
                    break
                widths[key] = width
                if self.affected_ms(key, widths, gone) <= before:
                    break
                widths[key] = current
        return widths

    def masks(self, widths: dict[int, int]) -> dict[int, np.ndarray]:
        masks = {conv.index: np.ones(conv.filters, bool) for conv in self.graph.convs}
        for key, width in widths.items():
            for conv in self.groups[key]:
                masks[conv] = self.mask(key, width)
        return masks

    def neighbours(self) -> dict[int, set[int]]:
        """Per group, the groups whose narrowing prices a conv its own narrowing changes (itself included)."""
        touching: dict[int, set[int]] = {}
        for key, convs in self.affected.items():
            for conv in convs:
                touching.setdefault(conv, set()).add(key)
        return {key: set().union(*(touching[conv] for conv in convs)) for key, convs in self.affected.items()}


def allocate(graph: Graph, weights: DarknetWeights, model: LatencyModel, target_ms: float,
             layer_keep: float | None = None, round_to: int = 1, blocks: bool = True) -> Descent:
    """The greedy descent to `target_ms` predicted; Descent.allocation is None when even the narrowest state the
    descent reaches predicts more. The frontier runs on to that narrowest state."""
    planner = Planner(graph, weights, model, layer_keep, round_to, blocks)
    neighbours = planner.neighbours()
    widths = {key: planner.candidates[key][-1] for key in planner.groups}
    gone: set[int] = set()
    removed: list[ResidualBlock] = []
    left: dict[int, int] = {}
    for block in planner.blocks:
        left[block.stride] = left.get(block.stride, 0) + 1
    ms, kept = planner.predicted_ms(widths, gone), planner.importance(widths, gone) * planner.total
    frontier = [(ms, kept / planner.total)]
    narrowings = {key: planner.narrowing(key, widths, gone) for key in planner.groups}
    chosen = None
    while True:
        if chosen is None and ms <= target_ms:
            chosen = planner.widen(widths, gone), tuple(sorted(removed, key=lambda b: b.first)), frozenset(gone)
        moves = [(lost / saved, 0, key, lost, width)
                 for key, move in narrowings.items() if move for lost, saved, width in [move]]
        for block in planner.blocks:
            move = planner.removal(block, widths, gone, left)
            if move:
                moves.append((move[0] / move[1], 1, block.first, move[0], block))
        if not moves:
            break
        _, kind, key, lost, what = min(moves, key=lambda move: move[:3])
        if kind == 0:
            widths[key] = what
            stale = neighbours[key]
        else:
            removed.append(what)
            gone.update(range(what.first, what.shortcut))
            left[what.stride] -= 1
            stale = {group for group, convs in planner.affected.items() if gone.intersection(convs)}
        for group in stale:
            narrowings[group] = planner.narrowing(group, widths, gone)
        ms, kept = planner.predicted_ms(widths, gone), kept - lost
        frontier.append((ms, kept / planner.total))
    if chosen is None:
        return Descent(None, frontier)
    widths, blocks_removed, gone = chosen
    allocation = Allocation(widths, blocks_removed, planner.predicted_ms(widths, set(gone)),
                            planner.importance(widths, set(gone)), planner.masks(widths))
    return Descent(allocation, frontier)


def threshold_importance(graph: Graph, weights: DarknetWeights, masks: dict[int, np.ndarray]) -> float:
    """Share of the total |gamma| of prunable convs that masks (original numbering) keep."""
    gammas = abs_gammas(weights, channel_constraints(graph).prunable)
    return sum(float(values[masks[conv]].sum()) for conv, values in gammas.items()) / \
        sum(float(values.sum()) for values in gammas.values())


def apply_allocation(graph: Graph, weights: DarknetWeights, allocation: Allocation, fold: bool = True) -> PruneResult:
    """The pruned model: the allocation's blocks removed, then each conv cut to its mask (constants folded)."""
    removed = {index for block in allocation.removed for index in block.layers}
    if allocation.removed:
        graph, weights = remove_blocks(graph, weights, list(allocation.removed))
    kept = [old for old in range(len(graph.nodes) + len(removed)) if old not in removed]
    masks = {new: allocation.masks[old] for new, old in enumerate(kept) if old in allocation.masks}
    pruned = build_graph(prune_sections(graph, masks), graph.path, graph.size, graph.dialect)
    prunable = channel_constraints(graph).prunable
    cut = sum(int((~masks[conv]).sum()) for conv in prunable) / sum(len(masks[conv]) for conv in prunable)
    return PruneResult(pruned, prune_weights(graph, weights, masks, fold), round(cut, 3), float("nan"),
                       len(allocation.removed), tuple(sorted(removed)), masks)
