"""A new section type is one registration: this file alone adds `[clamp]` (x clipped to [min, max], read from
the previous layer or `from=`), and it parses, summarises, builds, codegens, converts, prunes across and keeps
its reference through block removal, with no edit to the package."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import openvino as ov
import pytest
import torch
from fixtures import random_weights, spike_and_slab
from torch import nn

from pruneyolo.darknet import graph as dg
from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.summary import format_summary, summary_data
from pruneyolo.darknet.weights import write_weights
from pruneyolo.errors import CfgError
from pruneyolo.export.build import IrOptions, build_ir
from pruneyolo.nn.build import build_model
from pruneyolo.nn.codegen import render_model
from pruneyolo.prune.pruning import channel_masks, prune


class Clamp(nn.Module):
    """Clip every value to [low, high]."""

    def __init__(self, low=0.0, high=6.0):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x):
        return torch.clamp(x, self.low, self.high)


@dataclass(frozen=True)
class ClampNode(dg.Node):
    """The new node type: what every later stage needs to know, declared once."""

    low: float
    high: float

    kind = "clamp"
    flow = dg.Flow.PASSES
    layer = Clamp

    def layer_args(self) -> list:
        return [self.low, self.high]

    def describe(self) -> tuple[str, str, str]:
        return "clamp", "", f"{self.low:g}..{self.high:g}"

    def pass_constant(self, values):
        return np.clip(values, self.low, self.high)


def parse_clamp(opts, ctx) -> ClampNode:
    source = ctx.resolve(opts, "from", opts.int("from")) if opts.has("from") else ctx.previous
    low, high = opts.float("min", 0.0), opts.float("max", 6.0)
    if not low < high:
        raise opts.error(f"min={low:g} must be below max={high:g}", "min")
    return ClampNode(ctx.index, ctx.section.line, (source,), ctx.shape_of(source), low, high)


def conv(filters: int, activation: str = "leaky") -> str:
    batch_normalize = "batch_normalize=1\n" if activation != "linear" else ""
    return f"[convolutional]\n{batch_normalize}filters={filters}\nsize=1\nactivation={activation}\n"


# 1x1 convs only: no zero padding, so a prune with the cut channels' gammas zeroed is exact everywhere.
CFG = "\n".join([
    "[net]\nwidth=32\nheight=32\n",
    conv(8),  # 0
    conv(4), conv(8), "[shortcut]\nfrom=-3\n",  # 1-3: a removable residual block
    conv(4), conv(8), "[shortcut]\nfrom=-3\n",  # 4-6: the stage's last block, kept
    "[clamp]\nfrom=-7\nmin=0.1\nmax=0.3\n",  # 7: reads layer 0, past both blocks
    "[shortcut]\nfrom=-2\n",  # 8: clamp + the blocks' output
    conv(8), conv(18, "linear"),  # 9-10
    "[yolo]\nmask=0,1,2\nanchors=4,5, 8,9, 12,14\nclasses=1\n",  # 11
])


@pytest.fixture
def clamp_registered(monkeypatch):
    monkeypatch.setitem(dg.SECTIONS, "clamp", dg.SectionType(parse_clamp, references=("from",)))


@pytest.fixture
def model(clamp_registered):
    graph = dg.build_graph(parse_cfg_text(CFG, "clamp.cfg"), "clamp.cfg")
    weights = random_weights(graph, 3, gamma=spike_and_slab)
    for layer in weights.layers.values():  # cut channels still emit a constant: leaky(beta) != 0
        if layer.scales is not None:
            layer.bias[:] = np.abs(layer.bias) + 0.1
    for index in (0, 2, 5):  # layer 0 and the convs tied to it by the shortcuts: 3 of 8 channels weak
        weights.layers[index].scales[:5], weights.layers[index].scales[5:] = 1.0, 0.001
    return graph, weights


def frame(graph) -> np.ndarray:
    _, height, width = graph.input_shape
    return np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)


def torch_heads(graph, weights, image: np.ndarray, module=None) -> list[np.ndarray]:
    """Raw heads of the in-process module (or `module`) for a u8 BGR NHWC frame."""
    blob = torch.from_numpy(image[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    with torch.no_grad():
        return [head.numpy() for head in (module or build_model(graph, weights))(blob)]


def test_unregistered_it_is_an_unknown_section():
    with pytest.raises(CfgError, match=r"unknown section \[clamp\]"):
        dg.build_graph(parse_cfg_text(CFG, "clamp.cfg"), "clamp.cfg")


def test_it_parses_and_summarises(model):
    graph, _ = model
    node = graph.nodes[7]
    assert isinstance(node, ClampNode) and node.inputs == (0,) and node.out_shape == (8, 32, 32)
    assert (node.low, node.high) == (0.1, 0.3)
    row = format_summary(graph).splitlines()[3 + 7]
    assert row.split()[:3] == ["7", "clamp", "0.1..0.3"]
    assert summary_data(graph)["layers"][7]["channels"] == "passes through"


def test_it_may_be_first_and_checks_its_own_options(clamp_registered):
    first = dg.build_graph(parse_cfg_text("[net]\nwidth=8\nheight=8\n[clamp]\n", "c.cfg"), "c.cfg")
    assert first.nodes[0].inputs == (-1,) and first.nodes[0].out_shape == (3, 8, 8)
    with pytest.raises(CfgError, match="min=1 must be below max=0.5"):
        dg.build_graph(parse_cfg_text("[net]\nwidth=8\nheight=8\n[clamp]\nmin=1\nmax=0.5\n", "c.cfg"), "c.cfg")


def test_it_builds_codegens_and_converts_to_the_same_numbers(model, tmp_path):
    graph, weights = model
    built = build_model(graph, weights)
    seen = {}
    built.clamp7.register_forward_hook(lambda module, args, out: seen.update(clamp=out, into=args[0]))
    image = frame(graph)
    expected = torch_heads(graph, weights, image, built)
    assert torch.equal(seen["clamp"], seen["into"].clamp(0.1, 0.3))
    assert float(seen["into"].max()) > 0.3 and float(seen["into"].min()) < 0.1  # the clip did something

    source = render_model(graph)
    assert "class Clamp(nn.Module):" in source and "self.clamp7 = Clamp(low=0.1, high=0.3)" in source
    assert "class ModelClamp(nn.Module):" in source  # clamp.cfg's class does not shadow the layer class
    path = tmp_path / "clamp_model.py"
    path.write_text(source)
    write_weights(tmp_path / "clamp.weights", graph, weights)
    spec = importlib.util.spec_from_file_location("clamp_model", path)
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    standalone = generated.ModelClamp().load_darknet_weights(tmp_path / "clamp.weights")
    np.testing.assert_array_equal(torch_heads(graph, weights, image, standalone.eval())[0], expected[0])

    ir = build_ir(graph, weights, IrOptions(heads="raw")).model
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    converted = compiled(image)[0]
    assert np.abs(converted - expected[0]).max() < 1e-4 * max(1.0, float(np.abs(expected[0]).max()))


def test_channels_are_pruned_across_it_exactly(model):
    graph, weights = model
    masks, _, _ = channel_masks(graph, weights, 0.4)
    for conv_index, mask in masks.items():  # cut channels then emit exactly their constant, which pruning folds
        layer = weights.layers[conv_index]
        if layer.scales is not None:
            layer.scales[~mask] = 0
    result = prune(graph, weights, 0.4)
    kept = int(result.masks[0].sum())
    assert kept == 5  # layer 0's weak channels, read by the clamp, are cut
    assert result.graph.nodes[7].out_shape[0] == kept and result.graph.nodes[9].in_channels == kept
    image = frame(graph)
    original, pruned = torch_heads(graph, weights, image)[0], torch_heads(result.graph, result.weights, image)[0]
    assert np.abs(pruned - original).max() < 1e-4 * np.abs(original).max()


def test_its_reference_survives_block_removal(model):
    graph, weights = model
    result = prune(graph, weights, 0.0, shortcuts=1)
    assert result.removed_layers in ((1, 2, 3), (4, 5, 6))
    clamp = result.graph.nodes[4]
    assert isinstance(clamp, ClampNode) and clamp.inputs == (0,)
    assert result.graph.sections[5].entries["from"].value == "-4"
