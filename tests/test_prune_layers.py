"""Layer pruning: choosing residual blocks, renumbering references, and exactness in OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from cfg_sources import corpus_cfg, own_cfg, with_corpus
from fixtures import random_weights
from prune_support import head_inputs, random_image, sparse_model, write_model
from support import relative_error

from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import build_graph, load_graph
from pruneyolo.errors import PruneyoloError
from pruneyolo.prune.pruning import choose_blocks, prune, renumber, residual_blocks, write_result

TOY = """
[net]
width=32
height=32
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[shortcut]
from=-3
activation=linear
[route]
layers=0,-1
[shortcut]
from=3
"""


def test_renumber_rewrites_relative_and_absolute_references():
    sections = parse_cfg_text(TOY)
    renumbered = renumber(sections, removed={1, 2, 3}, replaced={3: 0})
    graph = build_graph(renumbered)
    route, shortcut = graph.nodes[1], graph.nodes[2]
    assert route.inputs == (0, 0)
    assert shortcut.inputs == (1, 0)
    assert renumbered[2].entries["layers"].value == "0,-1"
    assert renumbered[3].entries["from"].value == "0"


RES_SPP = own_cfg("res-spp")  # darknet53's pattern: 1, 2, 4, 2, 1 residual blocks at strides 2 .. 32


@pytest.mark.parametrize("cfg, total", [pytest.param(RES_SPP, 10, id="res-spp"),
                                        with_corpus(corpus_cfg("yolov3"), 23, id="yolov3")])
def test_blocks_are_chosen_by_gamma_and_never_empty_a_stage(cfg, total):
    graph = load_graph(cfg, (160, 160))
    weights = random_weights(graph, 0)
    blocks = residual_blocks(graph, weights)
    assert len(blocks) == total
    removable = total - 5
    chosen = choose_blocks(blocks, removable)
    assert sorted(b.stride for b in blocks if b not in chosen) == [2, 4, 8, 16, 32]
    lowest = min(blocks, key=lambda b: b.score)
    assert lowest.stride == 2 or lowest in chosen
    with pytest.raises(PruneyoloError, match=f"only {removable} residual blocks"):
        choose_blocks(blocks, removable + 1)


@pytest.mark.parametrize("cfg", [pytest.param(RES_SPP, id="res-spp"),
                                 with_corpus(corpus_cfg("yolov4"), id="yolov4")])
def test_zero_residual_branches_are_removed_without_changing_outputs(cfg, tmp_path):
    graph, weights = sparse_model(cfg, 160)
    for layer in weights.layers.values():
        if layer.scales is not None:
            layer.scales[:] = np.abs(layer.scales) + 0.5
    blocks = [block for block in residual_blocks(graph, weights) if block.stride in (8, 16)][:3]
    for block in blocks:
        last = weights.layers[block.shortcut - 1]
        last.scales[:] = 0
        last.bias[:] = 0
    result = prune(graph, weights, 0.0, shortcuts=3)
    assert result.removed_layers == tuple(i for block in blocks for i in block.layers)
    assert len(result.graph.nodes) == len(graph.nodes) - 9
    removed_bflops = sum(graph.nodes[i].bflops for i in result.removed_layers)
    cfg_path, _ = write_result(result, tmp_path, str(cfg))
    assert load_graph(cfg_path, (160, 160)).bflops == pytest.approx(graph.bflops - removed_bflops, abs=1e-9)
    image = random_image(graph)
    expected = head_inputs(graph, weights, tmp_path / "original", image)
    actual = head_inputs(result.graph, result.weights, tmp_path / "pruned", image)
    for before, after in zip(expected, actual, strict=True):
        assert relative_error(after, before) < 1e-4


@pytest.mark.parametrize("cfg, shortcuts", [pytest.param(RES_SPP, 5, id="res-spp"),
                                            with_corpus(corpus_cfg("yolov3"), 6, id="yolov3")])
def test_channel_and_layer_pruning_together_load_in_opencv(cfg, shortcuts, tmp_path):
    graph, weights = sparse_model(cfg, 160)
    result = prune(graph, weights, 0.7, shortcuts=shortcuts)
    assert len(result.graph.nodes) == len(graph.nodes) - 3 * shortcuts
    assert result.graph.bflops < graph.bflops / 2
    cfg_path, weights_path = write_model(result.graph, result.weights, tmp_path / "pruned")
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setInput(random_image(graph))
    outputs = net.forward([f"conv_{head.index - 1}" for head in result.graph.heads])
    assert [output.shape[1:] for output in outputs] == [head.out_shape for head in result.graph.heads]
