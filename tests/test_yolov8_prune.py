"""Slimming an imported YOLOv8 / YOLO11 graph: C2f / C3k2 halves, concats and residuals tie channels, the
head's last convs and the attention's inputs keep theirs, and pruning equals masking (in-process, f32)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yolov8_support as y8
from prune_support import zero_cut_channels

from pruneyolo.darknet.graph import Attention, Conv
from pruneyolo.nn.build import DecodedModel, build_model
from pruneyolo.prune.pruning import channel_constraints, channel_masks, prune, residual_blocks
from pruneyolo.yolov5.source import import_checkpoint

SIZE = (64, 64)
PERCENT = 0.3


@pytest.fixture(scope="module", params=["v11", "pruned_v8"])
def imported(request, tmp_path_factory):
    model = y8.randomize(y8.v11_layout() if request.param == "v11" else y8.pruned_v8_layout(), 7)
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param}.pt"
    torch.save({"model": model}, path)
    graph, result = import_checkpoint(path, SIZE)
    return graph, result.weights


def _rows(graph, weights) -> np.ndarray:
    image = torch.from_numpy(np.random.default_rng(0).random((1, 3, *SIZE), dtype=np.float32))
    with torch.no_grad():
        return DecodedModel(build_model(graph, weights), graph)(image).numpy()


def test_pruning_equals_masking(imported):
    graph, weights = imported[0], copy.deepcopy(imported[1])
    masks, _, _ = channel_masks(graph, weights, PERCENT)
    zero_cut_channels(weights, masks)
    expected = _rows(graph, weights)
    result = prune(graph, weights, PERCENT)
    assert result.graph.params < graph.params
    actual = _rows(result.graph, result.weights)
    assert actual.shape == expected.shape
    assert float(np.abs(actual - expected).max() / np.abs(expected).max()) < 1e-4


def test_heads_and_attention_inputs_keep_their_channels(imported):
    graph, weights = imported
    frozen = channel_constraints(graph).frozen
    head_convs = {source for head in graph.heads for source in graph.nodes[head.inputs[0]].inputs}
    attention_inputs = {node.inputs[0] for node in graph.nodes if isinstance(node, Attention)}
    assert head_convs <= frozen and attention_inputs <= frozen
    result = prune(graph, weights, PERCENT)
    assert [head.out_shape for head in result.graph.heads] == [head.out_shape for head in graph.heads]
    pruned = [conv for conv in result.graph.nodes if isinstance(conv, Conv)]
    assert len(pruned) == len(graph.convs)
    assert any(after.filters < before.filters for before, after in zip(graph.convs, pruned, strict=True))


def test_removing_zeroed_bottlenecks_keeps_the_outputs(imported):
    """--shortcuts: a C2f / C3k2 bottleneck whose last BatchNorm is zero adds nothing; removed, its output
    route reads the block's input instead, and the decoded rows stay the same."""
    graph, weights = imported
    blocks = residual_blocks(graph, weights)
    assert blocks
    chosen = prune(graph, weights, 0.0, shortcuts=1).removed_layers
    last = weights.layers[chosen[-1] - 1]
    saved = last.scales.copy(), last.bias.copy()
    last.scales[:], last.bias[:] = 0, 0
    try:
        expected = _rows(graph, weights)
        result = prune(graph, weights, 0.0, shortcuts=1)
        assert len(result.graph.nodes) == len(graph.nodes) - 3
        actual = _rows(result.graph, result.weights)
    finally:
        last.scales[:], last.bias[:] = saved
    assert float(np.abs(actual - expected).max() / np.abs(expected).max()) < 1e-4
