"""Prune a Darknet model in place of its cfg+weights: channels by BatchNorm |gamma|, residual blocks by count.

Channel pruning (network slimming) cuts every channel whose |gamma| is at or below one global threshold.
A cut channel no longer carries gamma * x_hat, but it still emitted the constant activation(beta); that
constant is folded into each consumer conv (its BN running mean, or its bias without BN), following it
through shortcut, route (with groups), upsample and maxpool. The fold is exact except where a consumer's
kernel overlaps its zero padding: there the original conv saw zeros, not the constant, so outputs differ
in a border ring that grows by `size // 2` per padded conv downstream. Away from the borders the pruned
model equals the original up to what gamma * x_hat contributed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pruneyolo.activations import activate
from pruneyolo.darknet.cfg import Section, format_cfg
from pruneyolo.darknet.graph import SECTIONS, Conv, Flow, Graph, Node, Shortcut, build_graph, channel_flow
from pruneyolo.darknet.weights import ConvWeights, DarknetWeights, weights_bytes
from pruneyolo.errors import ArgumentError, PruneyoloError
from pruneyolo.files import atomic_write


@dataclass(frozen=True)
class ChannelConstraints:
    """Which convs may lose channels: tie groups (one mask each), their slice counts, and frozen convs."""

    groups: tuple[tuple[int, ...], ...]
    slices: dict[int, int]  # first conv of a group -> number of equal slices its mask must keep
    frozen: frozenset[int]

    @property
    def prunable(self) -> list[int]:
        return sorted(conv for group in self.groups for conv in group)


@dataclass(frozen=True)
class PruneResult:
    """A pruned model and how it was obtained."""

    graph: Graph
    weights: DarknetWeights
    percent: float
    threshold: float
    shortcuts: int
    removed_layers: tuple[int, ...] = ()
    masks: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    round_to: int = 1
    floored: tuple[int, ...] = ()  # convs that kept their --layer-keep floor (the threshold cut them deeper)


def stride_of(graph: Graph, node: Node) -> int:
    """A node's stage: its downsampling factor relative to the network input."""
    return max(1, round(graph.input_shape[1] / node.out_shape[1]))


# --- which channels come from which conv ---------------------------------------------------------------

def channel_origins(graph: Graph) -> list[np.ndarray]:
    """Per node, a (channels, 2) array of (conv index, conv channel) each output channel comes from, by the
    nodes' channel flow; conv index -1 where no single conv owns the channel (the image, opaque nodes)."""
    origins: list[np.ndarray] = []

    def of(index: int) -> np.ndarray:
        return origins[index] if index >= 0 else _unowned(graph.input_shape[0])

    for node in graph.nodes:
        flow = channel_flow(node)
        if flow is Flow.CONSUMES:
            origin = np.stack([np.full(node.out_channels, node.index), np.arange(node.out_channels)], axis=1)
        elif flow in (Flow.PASSES, Flow.ADDS):
            origin = of(node.inputs[0])
        elif flow is Flow.CONCATENATES:
            origin = np.concatenate([_group_slice(of(i), node.groups, node.group_id) for i in node.inputs])
        else:
            origin = _unowned(node.out_channels)
        origins.append(origin)
    return origins


def _unowned(channels: int) -> np.ndarray:
    return np.stack([np.full(channels, -1), np.arange(channels)], axis=1)


def _group_slice(array: np.ndarray, groups: int, group_id: int) -> np.ndarray:
    width = len(array) // groups
    return array[group_id * width:(group_id + 1) * width]


def _whole_conv(origin: np.ndarray) -> int | None:
    """The conv whose entire output this is, channel for channel, else None."""
    conv = int(origin[0, 0])
    if conv >= 0 and np.all(origin[:, 0] == conv) and np.array_equal(origin[:, 1], np.arange(len(origin))):
        return conv
    return None


def _convs_in(origin: np.ndarray) -> set[int]:
    return {int(conv) for conv in origin[:, 0] if conv >= 0}


def _needs_every_input_channel(node: Node) -> bool:
    """Nodes that cannot take a pruned input: opaque ones (heads, reshuffles, attention, undeclared types) and
    grouped or fold-less convs."""
    flow = channel_flow(node)
    if flow is Flow.CONSUMES:
        return node.groups > 1 or not node.has_conv or not (node.batch_normalize or node.has_bias)
    return flow is Flow.OPAQUE


def channel_constraints(graph: Graph) -> ChannelConstraints:
    """Tie shortcut inputs, record grouped-route slices, and freeze convs whose channels cannot change."""
    for conv in graph.convs:
        if conv.share is not None:
            raise PruneyoloError(f"{graph.path}:{conv.line}: layer {conv.index} shares layer {conv.share}'s weights "
                                 "(share_index=); pruning weight-shared convs is not supported")
    origins = channel_origins(graph)
    consumers = graph.consumers()
    parent = {conv.index: conv.index for conv in graph.convs}
    slices = {conv.index: 1 for conv in graph.convs}
    frozen = {conv.index for conv in graph.convs
              if not (conv.batch_normalize and conv.has_conv) or conv.groups > 1}

    def root(conv: int) -> int:
        while parent[conv] != conv:
            conv = parent[conv]
        return conv

    def freeze(*indices: int) -> None:
        for index in indices:
            if index >= 0:
                frozen.update(_convs_in(origins[index]))

    for node in graph.nodes:
        flow = channel_flow(node)
        if flow is Flow.ADDS:
            owners = [_whole_conv(origins[i]) for i in node.inputs]
            same_width = all(graph.nodes[i].out_channels == node.out_channels for i in node.inputs)
            if None in owners or not same_width:
                freeze(*node.inputs)
            else:
                for owner in owners[1:]:
                    parent[root(owner)] = root(owners[0])
        elif flow is Flow.CONCATENATES and node.groups > 1:
            for source in node.inputs:
                owner = _whole_conv(origins[source]) if source >= 0 else None
                if owner is None:
                    freeze(source)
                else:
                    slices[owner] = math.lcm(slices[owner], node.groups)
        elif _needs_every_input_channel(node):
            freeze(*node.inputs)
        if not consumers[node.index]:  # a network output other than a head (whose channels no conv owns)
            freeze(node.index)

    members: dict[int, list[int]] = {}
    for conv in parent:
        members.setdefault(root(conv), []).append(conv)
    groups, group_slices = [], {}
    for group in members.values():
        group_slice = math.lcm(*(slices[conv] for conv in group))
        width = graph.nodes[group[0]].out_channels
        if frozen.isdisjoint(group) and width % group_slice == 0:
            groups.append(tuple(sorted(group)))
            group_slices[min(group)] = group_slice
        else:
            frozen.update(group)
    return ChannelConstraints(tuple(sorted(groups)), group_slices, frozenset(frozen))


# --- threshold and masks -------------------------------------------------------------------------------

def abs_gammas(weights: DarknetWeights, convs: list[int]) -> dict[int, np.ndarray]:
    """|gamma| of each listed BN conv."""
    return {conv: np.abs(weights.layers[conv].scales.astype(np.float64)) for conv in convs}


def gamma_threshold(gammas: dict[int, np.ndarray], percent: float) -> float:
    """The |gamma| at or below which the smallest `percent` of all channels fall (-inf for none)."""
    ordered = np.sort(np.concatenate(list(gammas.values())))
    cut = int(len(ordered) * percent)
    return float(ordered[cut - 1]) if cut else float("-inf")


def largest_safe_percent(gammas: dict[int, np.ndarray]) -> float:
    """The largest percent (3 decimals, rounded down) whose threshold leaves every layer a channel."""
    ordered = np.sort(np.concatenate(list(gammas.values())))
    highest = min(float(values.max()) for values in gammas.values())
    below = int(np.searchsorted(ordered, highest, side="left"))
    return math.floor(below / len(ordered) * 1000) / 1000


def check_percent(gammas: dict[int, np.ndarray], percent: float, threshold: float,
                  layer_keep: float | None) -> None:
    """Refuse (without a per-layer floor) a percent that would empty some layer."""
    if layer_keep is not None:
        return
    emptied = [conv for conv, values in gammas.items() if values.max() <= threshold]
    if emptied:
        raise ArgumentError(
            "percent", f"{percent:g} (threshold |gamma| {threshold:.4g}) would cut every channel of layer "
            f"{emptied[0]}; the largest safe percent is {largest_safe_percent(gammas):.3f}, or give {{layer_keep}} K "
            "to let every layer keep at least max(1, ceil(channels * K)) of its strongest channels", ("layer_keep",))


def layer_floor(width: int, layer_keep: float | None) -> int:
    """The fewest channels a layer of `width` keeps: max(1, ceil(width * layer_keep))."""
    return max(1, math.ceil(width * (layer_keep or 0)))


def layer_mask(values: np.ndarray, threshold: float, layer_keep: float | None) -> np.ndarray:
    """Channels above the threshold, topped up with the largest to the layer's floor."""
    mask = values > threshold
    minimum = layer_floor(len(values), layer_keep)
    if mask.sum() < minimum:
        mask[np.argsort(-values, kind="stable")[:minimum]] = True
    return mask


def rounded_count(kept: int, width: int, multiple: int) -> int:
    """`kept` rounded up to a multiple of `multiple`, but never past `width`."""
    return min(width, -(-kept // multiple) * multiple)


def equal_slices(mask: np.ndarray, scores: np.ndarray, slices: int, multiple: int = 1) -> np.ndarray:
    """Top up each of `slices` equal slices of the mask (by score) so all keep as many channels, that count
    rounded up to a multiple of `multiple` (at most the slice's width)."""
    mask, scores = mask.reshape(slices, -1).copy(), scores.reshape(slices, -1)
    target = rounded_count(int(mask.sum(axis=1).max()), mask.shape[1], multiple)
    for row, row_scores in zip(mask, scores, strict=True):
        missing = np.flatnonzero(~row)[np.argsort(-row_scores[~row], kind="stable")]
        row[missing[:target - row.sum()]] = True
    return mask.reshape(-1)


def channel_masks(graph: Graph, weights: DarknetWeights, percent: float, layer_keep: float | None = None,
                  round_to: int = 1) -> tuple[dict[int, np.ndarray], float, tuple[int, ...]]:
    """Kept output channels of every conv (all for frozen ones), the global |gamma| threshold, and the convs
    held at their floor; each group's count (per grouped-route slice) is rounded up to a multiple of
    `round_to` by keeping the next-largest."""
    if not 0 <= percent < 1:
        raise ArgumentError("percent", f"{percent:g} must be in [0, 1)")
    if round_to < 1:
        raise ArgumentError("round_to", f"{round_to} must be >= 1")
    constraints = channel_constraints(graph)
    if not constraints.groups:
        raise PruneyoloError(f"{graph.path}: no conv can lose channels (pruning needs BatchNorm convs)")
    gammas = abs_gammas(weights, constraints.prunable)
    threshold = gamma_threshold(gammas, percent)
    check_percent(gammas, percent, threshold, layer_keep)
    masks = {conv.index: np.ones(conv.filters, bool) for conv in graph.convs}
    floored = []
    for group in constraints.groups:
        above = np.any([gammas[conv] > threshold for conv in group], axis=0)
        union = np.any([layer_mask(gammas[conv], threshold, layer_keep) for conv in group], axis=0)
        if union.sum() > above.sum():
            floored.extend(group)
        scores = np.max([gammas[conv] for conv in group], axis=0)
        union = equal_slices(union, scores, constraints.slices[group[0]], round_to)
        for conv in group:
            masks[conv] = union
    return masks, threshold, tuple(sorted(floored))


def node_masks(graph: Graph, conv_masks: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Kept output channels of every node, given the convs' masks."""
    origins = channel_origins(graph)
    return [np.array([conv < 0 or conv_masks[conv][channel] for conv, channel in origin], bool)
            for origin in origins]


# --- folding the constants of cut channels ---------------------------------------------------------------

def cut_constants(graph: Graph, weights: DarknetWeights) -> list[np.ndarray]:
    """Per node, the constant each output channel would emit if cut: activation(beta) at convs, carried on by
    the nodes' channel flow."""
    constants: list[np.ndarray] = []
    for node in graph.nodes:
        inputs = [constants[i] if i >= 0 else np.zeros(graph.input_shape[0]) for i in node.inputs]
        flow = channel_flow(node)
        if flow is Flow.CONSUMES:
            bias = weights.layers[node.index].bias
            value = activate(node.activation, bias) if node.batch_normalize else np.zeros(node.filters)
        elif flow is Flow.PASSES:
            value = node.pass_constant(inputs[0])
        elif flow is Flow.CONCATENATES:
            value = np.concatenate([_group_slice(v, node.groups, node.group_id) for v in inputs])
        elif flow is Flow.ADDS:
            value = inputs[0].copy()
            for other in inputs[1:]:
                shared = min(len(value), len(other))
                value[:shared] += other[:shared]
            value = activate(node.activation, value)
        else:
            value = np.zeros(node.out_channels)
        constants.append(value)
    return constants


def fold_delta(kernel: np.ndarray, constants: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """What cut input channels, each a constant map, add to every output of a conv (ignoring padding)."""
    return kernel[:, cut].sum(axis=(2, 3), dtype=np.float64) @ constants[cut]


def pruned_layer(conv: Conv, layer: ConvWeights, in_mask: np.ndarray, out_mask: np.ndarray,
                 delta: np.ndarray | None) -> ConvWeights:
    """One conv's arrays with `delta` folded in (BN mean, else bias) and cut channels removed."""
    bias, mean = layer.bias, layer.mean
    if delta is not None and conv.batch_normalize:
        mean = (mean - delta).astype(np.float32)
    elif delta is not None:
        bias = (bias + delta).astype(np.float32)

    def keep(array):
        return None if array is None else np.ascontiguousarray(array[out_mask])

    in_kept = slice(None) if in_mask.all() else in_mask  # a grouped conv's inputs are never cut
    kernel = None if layer.weights is None else np.ascontiguousarray(layer.weights[out_mask][:, in_kept])
    return ConvWeights(bias=keep(bias), scales=keep(layer.scales), mean=keep(mean), variance=keep(layer.variance),
                       weights=kernel)


def prune_weights(graph: Graph, weights: DarknetWeights, conv_masks: dict[int, np.ndarray],
                  fold: bool = True) -> DarknetWeights:
    """Every conv's weights with cut channels removed and (unless fold=False) their constants folded in."""
    masks = node_masks(graph, conv_masks)
    constants = cut_constants(graph, weights)
    layers = {}
    for conv in graph.convs:
        layer, source = weights.layers[conv.index], conv.inputs[0]
        in_mask = masks[source] if source >= 0 else np.ones(conv.in_channels, bool)
        delta = None
        if fold and not in_mask.all():
            delta = fold_delta(layer.weights, constants[source], ~in_mask)
        layers[conv.index] = pruned_layer(conv, layer, in_mask, conv_masks[conv.index], delta)
    return DarknetWeights(0, 2, 5, weights.seen, layers, weights.random_seed)


def prune_sections(graph: Graph, conv_masks: dict[int, np.ndarray]) -> list[Section]:
    """Copies of the cfg sections with each conv's filters= set to its kept channel count."""
    sections = copy.deepcopy(list(graph.sections))
    for conv in graph.convs:
        kept = int(conv_masks[conv.index].sum())
        if kept != conv.filters:
            sections[conv.index + 1].set("filters", kept)
    return sections


def prune_channels(graph: Graph, weights: DarknetWeights, percent: float, layer_keep: float | None = None,
                   fold: bool = True, round_to: int = 1) -> PruneResult:
    """Network slimming at one global |gamma| percentile; returns the pruned graph and weights."""
    masks, threshold, floored = channel_masks(graph, weights, percent, layer_keep, round_to)
    new_graph = build_graph(prune_sections(graph, masks), graph.path, graph.size, graph.dialect)
    return PruneResult(new_graph, prune_weights(graph, weights, masks, fold), percent, threshold, 0, (), masks,
                       round_to, floored)


# --- layer pruning --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResidualBlock:
    """[conv][conv][shortcut from=-3]: removable as a whole, leaving the shortcut's other input."""

    first: int
    shortcut: int
    score: float  # mean |gamma| of the conv feeding the shortcut
    stride: int

    @property
    def layers(self) -> range:
        return range(self.first, self.shortcut + 1)


def residual_blocks(graph: Graph, weights: DarknetWeights) -> list[ResidualBlock]:
    """The blocks whose removal leaves an identity: linear shortcut of x and conv(conv(x)), nothing else
    reading the two convs, and a BN conv last so it can be scored."""
    consumers = graph.consumers()
    blocks = []
    for node in graph.nodes:
        index = node.index
        if not (isinstance(node, Shortcut) and node.inputs == (index - 1, index - 3) and index >= 3
                and node.activation == "linear"):
            continue
        first, last = graph.nodes[index - 2], graph.nodes[index - 1]
        if not (isinstance(first, Conv) and isinstance(last, Conv) and last.batch_normalize
                and consumers[first.index] == [last.index] and consumers[last.index] == [index]
                and graph.nodes[index - 3].out_shape == node.out_shape):
            continue
        score = float(np.abs(weights.layers[last.index].scales).mean())
        blocks.append(ResidualBlock(first.index, index, score, stride_of(graph, node)))
    return blocks


def choose_blocks(blocks: list[ResidualBlock], count: int) -> list[ResidualBlock]:
    """The `count` lowest-scoring blocks, never taking the last block of a stage."""
    left = {}
    for block in blocks:
        left[block.stride] = left.get(block.stride, 0) + 1
    chosen = []
    for block in sorted(blocks, key=lambda b: (b.score, b.shortcut)):
        if len(chosen) < count and left[block.stride] > 1:
            chosen.append(block)
            left[block.stride] -= 1
    if len(chosen) < count:
        raise ArgumentError("shortcuts", f"{count}: only {len(chosen)} residual blocks can be removed without "
                                          "emptying a stage")
    return sorted(chosen, key=lambda b: b.first)


def renumber(sections: list[Section], removed: set[int], replaced: dict[int, int]) -> list[Section]:
    """Copies of the sections without the removed layers, every route/shortcut reference (absolute or
    relative) pointing at the same layer under the new numbering; `replaced` maps a removed layer to the
    layer that now stands for it."""
    kept = [old for old in range(len(sections) - 1) if old not in removed]
    new_index = {old: new for new, old in enumerate(kept)}

    def target(old: int) -> int:
        while old in replaced:
            old = replaced[old]
        return new_index[old]

    result = [copy.deepcopy(sections[0])]
    for old in kept:
        section = copy.deepcopy(sections[old + 1])
        for key in SECTIONS[section.name].references:
            if key in section.entries:
                new = new_index[old]
                references = []
                for reference in section.options().ints(key):
                    absolute = target(old + reference if reference < 0 else reference)
                    references.append(absolute - new if reference < 0 else absolute)
                section.set(key, references)
        result.append(section)
    return result


def remove_blocks(graph: Graph, weights: DarknetWeights,
                  blocks: list[ResidualBlock]) -> tuple[Graph, DarknetWeights]:
    """The graph and weights without the given residual blocks."""
    removed = {index for block in blocks for index in block.layers}
    replaced = {block.shortcut: block.first - 1 for block in blocks}
    sections = renumber(list(graph.sections), removed, replaced)
    new_graph = build_graph(sections, graph.path, graph.size, graph.dialect)
    kept = [old for old in range(len(graph.nodes)) if old not in removed]
    layers = {new: weights.layers[old] for new, old in enumerate(kept) if old in weights.layers}
    return new_graph, DarknetWeights(weights.major, weights.minor, weights.revision, weights.seen, layers,
                                     weights.random_seed)


def prune(graph: Graph, weights: DarknetWeights, percent: float, layer_keep: float | None = None,
          shortcuts: int = 0, fold: bool = True, round_to: int = 1) -> PruneResult:
    """Remove `shortcuts` residual blocks, then prune channels at `percent`, counts rounded up to `round_to`;
    without `layer_keep` a percent that would empty a layer is refused, with it each layer keeps its floor."""
    if layer_keep is not None and not 0 <= layer_keep <= 1:
        raise ArgumentError("layer_keep", f"{layer_keep:g} must be in [0, 1]")
    if shortcuts < 0:
        raise ArgumentError("shortcuts", f"{shortcuts} must be >= 0")
    removed: tuple[int, ...] = ()
    if shortcuts:
        blocks = choose_blocks(residual_blocks(graph, weights), shortcuts)
        removed = tuple(index for block in blocks for index in block.layers)
        graph, weights = remove_blocks(graph, weights, blocks)
    result = prune_channels(graph, weights, percent, layer_keep, fold, round_to)
    return PruneResult(result.graph, result.weights, percent, result.threshold, shortcuts, removed, result.masks,
                       round_to, result.floored)


# --- output -----------------------------------------------------------------------------------------------

def output_stem(cfg_path: str, percent: float, shortcuts: int) -> str:
    """`prune_<P>[_shortcut_<N>]_<stem>` for a cfg path."""
    layers = f"_shortcut_{shortcuts}" if shortcuts else ""
    return f"prune_{percent:g}{layers}_{Path(cfg_path).stem}"


def write_result(result: PruneResult, directory, cfg_path: str, stem: str | None = None) -> tuple[Path, Path | None]:
    """Write the pruned .cfg and .weights (atomically) into `directory` as `stem` (default: output_stem's); returns
    their paths. Random weights (`--weights random`) are not written: only the cfg is a result then (weights None)."""
    stem = stem or output_stem(cfg_path, result.percent, result.shortcuts)
    cfg_out, weights_out = Path(directory) / f"{stem}.cfg", Path(directory) / f"{stem}.weights"
    atomic_write(cfg_out, format_cfg(list(result.graph.sections)))
    if result.weights.random_seed is not None:
        return cfg_out, None
    atomic_write(weights_out, weights_bytes(result.graph, result.weights))
    return cfg_out, weights_out
