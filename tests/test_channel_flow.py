"""Node types declare how channels flow (their `flow`); pruning and the summary read it.

A new layer type is added here the way a contributor would add one (a node class naming its PyTorch layer, its
section parser); undeclared its flow is a barrier, declared as passing channels through it is pruned across, and
either way the pruned model computes what the original did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from fixtures import random_weights, spike_and_slab
from prune_support import zero_cut_channels
from torch import nn

from pruneyolo.darknet import graph as dg
from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.summary import summary_data
from pruneyolo.nn import build
from pruneyolo.prune.pruning import channel_masks, prune

CFG = """
[net]
width=32
height=32

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[double]

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

[convolutional]
filters=18
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,5, 8,9, 12,14
classes=1
"""


class DoubleLayer(nn.Module):
    def forward(self, x):
        return x * 2


@dataclass(frozen=True)
class Double(dg.Node):
    """A new layer type: every channel times two."""

    kind = "double"
    layer = DoubleLayer

    def pass_constant(self, values):
        return values * 2


def parse_double(opts, ctx) -> Double:
    return Double(ctx.index, ctx.section.line, (ctx.previous,), ctx.shape_of(ctx.previous))


@pytest.fixture
def with_double(monkeypatch):
    """The section of the new type registered; its node class declares its PyTorch layer, its channel flow not
    (yet)."""
    monkeypatch.setitem(dg.SECTIONS, "double", dg.SectionType(parse_double))
    graph = dg.build_graph(parse_cfg_text(CFG, "double.cfg"), "double.cfg")
    weights = random_weights(graph, 3, gamma=spike_and_slab)
    for layer in weights.layers.values():  # cut channels still emit a constant: leaky(beta) != 0
        if layer.bias is not None:
            layer.bias[:] = np.abs(layer.bias) + 0.1
    return graph, weights


def heads(graph, weights) -> np.ndarray:
    image = torch.rand(1, *graph.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return build.build_model(graph, weights)(image)[0].numpy()


def pruned_error(graph, weights) -> tuple[np.ndarray, float]:
    """The first conv's kept channels and the pruned model's largest head difference from the original's, with
    the cut channels' gammas zeroed (so each emits exactly its constant, which pruning folds into conv 2)."""
    masks, _, _ = channel_masks(graph, weights, 0.5)
    zero_cut_channels(weights, masks, beta=False)
    result = prune(graph, weights, 0.5)
    return result.masks[0], float(np.abs(heads(result.graph, result.weights) - heads(graph, weights)).max())


def test_an_undeclared_node_type_is_a_barrier_and_pruning_stays_exact(with_double):
    graph, weights = with_double
    assert dg.channel_flow(graph.nodes[1]) is dg.Flow.OPAQUE
    kept, error = pruned_error(graph, weights)
    assert kept.all() and error < 1e-5
    assert summary_data(graph)["layers"][1]["channels"] == "opaque"


def test_a_node_type_declared_pass_through_is_pruned_across_exactly(with_double, monkeypatch):
    monkeypatch.setattr(Double, "flow", dg.Flow.PASSES)
    graph, weights = with_double
    kept, error = pruned_error(graph, weights)
    assert 0 < kept.sum() < len(kept) and error < 1e-5
    assert summary_data(graph)["layers"][1]["channels"] == "passes through"


def test_every_node_type_declares_its_channel_flow_and_a_layer_unless_it_passes_through():
    node_types = {cls for cls in vars(dg).values() if isinstance(cls, type) and issubclass(cls, dg.Node)}
    flows = {cls: cls.flow for cls in node_types - {dg.Node}}
    assert flows == {
        dg.Conv: dg.Flow.CONSUMES, dg.MaxPool: dg.Flow.PASSES, dg.Upsample: dg.Flow.PASSES,
        dg.Identity: dg.Flow.PASSES, dg.Route: dg.Flow.CONCATENATES, dg.Shortcut: dg.Flow.ADDS,
        dg.AvgPool: dg.Flow.OPAQUE, dg.Reorg: dg.Flow.OPAQUE, dg.ScaleChannels: dg.Flow.OPAQUE,
        dg.Sam: dg.Flow.OPAQUE, dg.Yolo: dg.Flow.OPAQUE, dg.Detect: dg.Flow.OPAQUE, dg.Attention: dg.Flow.OPAQUE}
    assert {cls for cls in flows if cls.layer is None} == {cls for cls in flows if cls.pass_through} == {
        dg.Identity, dg.Yolo, dg.Detect}
