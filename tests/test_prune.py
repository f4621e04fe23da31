"""Channel pruning: constraints, exactness against OpenCV's Darknet importer, bias folding, refusal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cfg_sources import CORPUS, corpus_cfg, needs_corpus, own_cfg, shipped_cfg, with_corpus
from prune_support import head_inputs, random_image, sparse_model, zero_cut_channels
from support import relative_error

from pruneyolo.darknet.graph import Conv, MaxPool, Route, Shortcut, load_graph
from pruneyolo.darknet.weights import read_weights
from pruneyolo.errors import PruneyoloError
from pruneyolo.prune.pruning import (
    abs_gammas,
    channel_constraints,
    channel_masks,
    largest_safe_percent,
    output_stem,
    prune,
    write_result,
)

DEMO_TINY = shipped_cfg("demo-tiny")  # yolov4-tiny's structure at half width


def cfgs(own: list, corpus: list) -> list:
    """Our cfgs, then stock corpus cfgs (skipped without the corpus)."""
    return [pytest.param(path, id=path.stem) for path in own] + [with_corpus(corpus_cfg(name), id=name)
                                                                 for name in corpus]


KEPT_SHARE = {"attention": 0.7}  # most of its convs are grouped or feed attention layers


OWN = [own_cfg(name) for name in ("tiny-maxpool", "res-spp", "csp-newcoords", "region-reorg", "attention")]


STOCK = ["yolov3-tiny", "yolov4-tiny", "yolov3-spp", "yolov4"]


def assert_same_heads(graph, weights, result, tmp_path) -> None:
    """The pruned model's head inputs equal the original's in OpenCV (relative 1e-4) on a random image."""
    image = random_image(graph)
    expected = head_inputs(graph, weights, tmp_path / "original", image)
    actual = head_inputs(result.graph, result.weights, tmp_path / "pruned", image)
    for before, after in zip(expected, actual, strict=True):
        assert before.shape == after.shape
        assert relative_error(after, before) < 1e-4


@pytest.mark.parametrize("cfg", cfgs([*OWN, DEMO_TINY], STOCK))
def test_pruned_outputs_equal_original_when_cut_channels_are_zero(cfg, tmp_path):
    graph, weights = sparse_model(cfg, 160)
    masks, _, _ = channel_masks(graph, weights, 0.8)
    zero_cut_channels(weights, masks)
    result = prune(graph, weights, 0.8)
    assert all(np.array_equal(result.masks[conv], masks[conv]) for conv in masks)
    assert result.graph.params < graph.params * KEPT_SHARE.get(cfg.stem, 0.25)
    assert_same_heads(graph, weights, result, tmp_path)


@pytest.mark.parametrize("cfg", [pytest.param(own_cfg("attention"), id="attention"),
                                 with_corpus(CORPUS / "ZJU-lishuang__yolov5_prune__cfg__yolo-fastest.cfg",
                                             id="yolo-fastest")])
def test_grouped_convs_and_their_inputs_keep_their_channels(cfg):
    graph, weights = sparse_model(cfg, 160)
    result = prune(graph, weights, 0.5)
    grouped = [conv for conv in graph.convs if conv.groups > 1]
    assert grouped and result.graph.params < graph.params
    for conv in grouped:
        assert result.masks[conv.index].all()
        assert result.graph.nodes[conv.index].in_channels == conv.in_channels
        assert result.weights.layers[conv.index].weights.shape == conv.weight_shape


def _border_pixels(graph) -> int:
    """How far (in input pixels) zero padding can carry a folding error inward, summed over the net."""
    pixels = 0
    for node in graph.nodes:
        if isinstance(node, (Conv, MaxPool)):
            in_stride = graph.input_shape[1] // graph.nodes[node.inputs[0]].out_shape[1] if node.index else 1
            reach = node.padding if isinstance(node, Conv) else node.size - node.stride_y
            pixels += reach * in_stride
    return pixels


@pytest.mark.parametrize("cfg", cfgs([own_cfg("tiny-maxpool")], ["yolov3-tiny"]))
def test_folded_constants_keep_outputs_away_from_borders(cfg, tmp_path):
    graph, weights = sparse_model(cfg, 608)
    masks, _, _ = channel_masks(graph, weights, 0.8)
    zero_cut_channels(weights, masks, beta=False)
    for conv, mask in masks.items():
        if weights.layers[conv].scales is not None:
            weights.layers[conv].bias[~mask] = np.random.default_rng(conv).normal(0, 1, (~mask).sum())
    image = random_image(graph)
    expected = head_inputs(graph, weights, tmp_path / "original", image)
    folded = prune(graph, weights, 0.8)
    unfolded = prune(graph, weights, 0.8, fold=False)
    with_fold = head_inputs(folded.graph, folded.weights, tmp_path / "folded", image)
    without_fold = head_inputs(unfolded.graph, unfolded.weights, tmp_path / "unfolded", image)
    border = _border_pixels(graph)
    for head, before, after, plain in zip(graph.heads, expected, with_fold, without_fold, strict=True):
        margin = math.ceil(border / head.stride)
        centre = (Ellipsis, slice(margin, -margin), slice(margin, -margin))
        assert before[centre].shape[-1] >= 5
        assert relative_error(after[centre], before[centre]) < 1e-3
        assert np.abs(before - after).mean() < np.abs(before - plain).mean() / 5


@pytest.mark.parametrize("cfg", cfgs([DEMO_TINY], ["yolov4-tiny"]))
def test_grouped_route_inputs_keep_equal_halves(cfg):
    graph, weights = sparse_model(cfg, 160)
    constraints = channel_constraints(graph)
    grouped_sources = {source for node in graph.nodes if isinstance(node, Route) and node.groups > 1
                       for source in node.inputs}
    assert grouped_sources and all(constraints.slices[source] == 2 for source in grouped_sources)
    masks, _, _ = channel_masks(graph, weights, 0.8)
    for source in grouped_sources:
        first, second = masks[source].reshape(2, -1).sum(axis=1)
        assert first == second


@pytest.mark.parametrize("cfg", cfgs([own_cfg("res-spp"), own_cfg("csp-newcoords")], ["yolov3-spp"]))
def test_shortcut_inputs_share_one_mask_and_heads_keep_filters(cfg):
    graph, weights = sparse_model(cfg, 160)
    masks, _, _ = channel_masks(graph, weights, 0.7)
    for node in graph.nodes:
        if isinstance(node, Shortcut):
            conv = node.inputs[0]
            source = node.inputs[1]
            while not isinstance(graph.nodes[source], Conv):
                source = graph.nodes[source].inputs[0]
            assert np.array_equal(masks[conv], masks[source])
    for head in graph.heads:
        assert masks[head.index - 1].all()
    unbatched = [conv.index for conv in graph.convs if not conv.batch_normalize]
    assert unbatched and all(masks[index].all() for index in unbatched)


def test_every_layer_keeps_its_minimum():
    graph, weights = sparse_model(DEMO_TINY, 160)
    masks, _, _ = channel_masks(graph, weights, 0.9, layer_keep=0.25)
    for conv in graph.convs:
        assert masks[conv.index].sum() >= math.ceil(conv.filters * 0.25)


def test_unsafe_percent_is_refused_with_the_largest_safe_one_and_the_flag_that_lifts_it():
    graph, weights = sparse_model(DEMO_TINY, 160)
    safe = largest_safe_percent(abs_gammas(weights, channel_constraints(graph).prunable))
    with pytest.raises(PruneyoloError, match=rf"largest safe percent is {safe:.3f}, or give layer_keep K"):
        prune(graph, weights, 0.99)
    with pytest.raises(PruneyoloError, match="would cut every channel of layer"):
        prune(graph, weights, safe + 0.002)
    assert all(mask.any() for mask in prune(graph, weights, safe).masks.values())


def _collapsed(cfg, size: int, layers: int = 2):
    """A sparse model in which the first `layers` prunable convs shrank as a whole (every |gamma| tiny, as L1
    leaves a layer whose output the next BatchNorm renormalises), and the percent that first empties them."""
    graph, weights = sparse_model(cfg, size)
    prunable = channel_constraints(graph).prunable
    rng = np.random.default_rng(1)
    for conv in prunable[:layers]:
        scales = weights.layers[conv].scales
        scales[:] = rng.uniform(1e-4, 2e-3, scales.shape).astype(np.float32)
    return graph, weights, prunable[:layers]


@pytest.mark.parametrize("layer_keep, round_to", [(0.01, 1), (0.1, 4), (0.3, 1)])
def test_layer_keep_goes_past_the_safe_percent_keeping_each_layers_floor(layer_keep, round_to):
    graph, weights, collapsed = _collapsed(DEMO_TINY, 160)
    gammas = abs_gammas(weights, channel_constraints(graph).prunable)
    safe = largest_safe_percent(gammas)
    assert safe < 0.88  # the collapsed layers empty at this percent
    with pytest.raises(PruneyoloError, match="or give layer_keep K"):
        prune(graph, weights, 0.88)
    result = prune(graph, weights, 0.88, layer_keep=layer_keep, round_to=round_to)
    threshold = result.threshold
    for conv in graph.convs:
        kept, width = int(result.masks[conv.index].sum()), conv.filters
        floor = max(1, math.ceil(width * layer_keep))
        assert kept >= min(width, -(-floor // round_to) * round_to)
    floored = set(result.floored)
    assert set(collapsed) <= floored
    for conv, values in gammas.items():
        constraints = channel_constraints(graph)
        group = next(g for g in constraints.groups if conv in g)
        above = int(np.any([gammas[c] > threshold for c in group], axis=0).sum())
        assert (conv in floored) == (above < max(1, math.ceil(len(values) * layer_keep)))
    for conv in collapsed:  # a floored layer keeps its strongest channels
        kept = result.masks[conv]
        assert gammas[conv][kept].min() >= gammas[conv][~kept].max()


@pytest.mark.parametrize("cfg", cfgs([DEMO_TINY, own_cfg("res-spp")], ["yolov4"]))
def test_pruning_past_the_safe_percent_with_a_floor_is_exact(cfg, tmp_path):
    graph, weights, _ = _collapsed(cfg, 160)
    masks = prune(graph, weights, 0.88, layer_keep=0.05).masks
    zero_cut_channels(weights, masks)
    result = prune(graph, weights, 0.88, layer_keep=0.05)
    assert result.floored and all(np.array_equal(result.masks[conv], masks[conv]) for conv in masks)
    assert_same_heads(graph, weights, result, tmp_path)


def test_the_floor_note_names_each_floored_layer_and_its_kept_channels():
    from pruneyolo.prune.report import floor_note

    graph, weights, collapsed = _collapsed(DEMO_TINY, 160)
    result = prune(graph, weights, 0.88, layer_keep=0.1)
    note = floor_note(result)
    for conv in collapsed:
        assert f"layer {conv} ({graph.nodes[conv].filters} -> {int(result.masks[conv].sum())})" in note
    assert note.count("layer ") == len(result.floored)
    assert floor_note(prune(graph, weights, 0.02)) == ""


def test_written_files_are_named_and_read_back(tmp_path):
    graph, weights = sparse_model(DEMO_TINY, 160)
    result = prune(graph, weights, 0.88)
    cfg_path, weights_path = write_result(result, tmp_path, str(DEMO_TINY))
    assert cfg_path.name == "prune_0.88_demo-tiny.cfg" and weights_path.name == "prune_0.88_demo-tiny.weights"
    assert output_stem("a/yolov3.cfg", 0.5, 4) == "prune_0.5_shortcut_4_yolov3"
    reread = load_graph(cfg_path, (160, 160))
    assert reread.params == result.graph.params
    assert weights_path.read_bytes()[:12] == np.array([0, 2, 5], "<i4").tobytes()
    loaded = read_weights(weights_path, reread)
    assert np.array_equal(loaded.layers[0].weights, result.weights.layers[0].weights)
    assert "anchors" in cfg_path.read_text()


@needs_corpus
@pytest.mark.parametrize("name, multiple", [("yolov4-tiny", 8), ("yolov4", 16), ("yolov3-spp", 32)])
def test_rounded_counts_are_multiples_from_the_next_largest_gammas(name, multiple):
    graph, weights = sparse_model(corpus_cfg(name), 160)
    constraints = channel_constraints(graph)
    plain, _, _ = channel_masks(graph, weights, 0.85)
    rounded, _, _ = channel_masks(graph, weights, 0.85, round_to=multiple)
    gammas = abs_gammas(weights, constraints.prunable)
    assert any(plain[conv].sum() % multiple for conv in constraints.prunable)
    for group in constraints.groups:
        slices = constraints.slices[group[0]]
        assert all(np.array_equal(rounded[conv], rounded[group[0]]) for conv in group)
        kept = rounded[group[0]].reshape(slices, -1)
        width = kept.shape[1]
        assert len(set(kept.sum(axis=1))) == 1
        assert kept[0].sum() % multiple == 0 or kept[0].sum() == width
        assert kept[0].sum() == min(width, -(-plain[group[0]].reshape(slices, -1)[0].sum() // multiple) * multiple)
        scores = np.max([gammas[conv] for conv in group], axis=0).reshape(slices, -1)
        added = rounded[group[0]].reshape(slices, -1) & ~plain[group[0]].reshape(slices, -1)
        for row_scores, row_added, row_kept in zip(scores, added, kept, strict=True):
            if row_added.any() and not row_kept.all():
                assert row_scores[row_added].min() >= row_scores[~row_kept].max()
    assert all(rounded[conv].all() for conv in constraints.frozen)


@needs_corpus
@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4"])
def test_rounded_prune_equals_original_when_cut_channels_are_zero(name, tmp_path):
    graph, weights = sparse_model(corpus_cfg(name), 160)
    masks, _, _ = channel_masks(graph, weights, 0.85, round_to=16)
    zero_cut_channels(weights, masks)
    result = prune(graph, weights, 0.85, round_to=16)
    assert all(np.array_equal(result.masks[conv], masks[conv]) for conv in masks)
    assert all(conv.filters % 16 == 0 for conv in result.graph.convs if conv.index + 1 not in
               {head.index for head in result.graph.heads})
    assert_same_heads(graph, weights, result, tmp_path)


@needs_corpus
def test_round_below_one_is_refused():
    graph, weights = sparse_model(corpus_cfg("yolov4-tiny"), 160)
    with pytest.raises(PruneyoloError, match="round_to 0 must be >= 1"):
        prune(graph, weights, 0.5, round_to=0)
