"""The project's own cfgs (tests/data/ and the shipped cfgs/): together they use every section, activation,
dialect and head decode the graph knows (test_corpus takes each through parse -> weights round trip -> IR ->
parity with the corpus's cfgs), plus the activations and shortcut forms checked layer by layer in OpenCV.
These run on a fresh clone, where the third-party corpus is absent."""

from __future__ import annotations

import numpy as np
import pytest
from cfg_sources import OWN_CFGS, SHIPPED_CFGS, own_cfg
from fixtures import random_weights
from support import (
    compile_f32,
    opencv_heads,
    opencv_net,
    opencv_reads,
    random_bgr,
    relative_error,
    to_blob,
)

from pruneyolo.activations import ACTIVATIONS, canonical_activation
from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import (
    DIALECTS,
    SECTIONS,
    Conv,
    MaxPool,
    Route,
    Shortcut,
    Upsample,
    build_graph,
    load_graph,
)
from pruneyolo.export.build import IrOptions, build_ir

CFGS = OWN_CFGS + SHIPPED_CFGS
OPENCV_READS = [path for path in CFGS if opencv_reads(path)]
OPENCV_REFUSES = [path for path in CFGS if path not in OPENCV_READS]
DECODES = {"darknet", "new_coords", "yolov5", "region", "dfl"}


def _features(graph) -> set[str]:
    """The less common variants of layers a graph uses."""
    found = set()
    for node in graph.nodes:
        if isinstance(node, Conv):
            found |= {name for name, used in (
                ("grouped conv", 1 < node.groups < node.in_channels),
                ("depthwise conv", node.groups == node.filters > 1),
                ("dilated conv", node.dilation > 1), ("stride_x != stride_y", node.stride_x != node.stride_y),
                ("conv without BatchNorm", node.has_conv and not node.batch_normalize),
                ("even kernel", node.size % 2 == 0)) if used}
        elif isinstance(node, Route):
            found |= {"route groups"} if node.groups > 1 else set()
            references = graph.sections[node.index + 1].options().ints("layers")
            found |= {"route by absolute index"} if max(references) >= 0 else set()
        elif isinstance(node, Shortcut):
            shapes = {graph.nodes[i].out_channels for i in node.inputs}
            found |= {"shortcut of several from"} if len(node.inputs) > 2 else set()
            found |= {"shortcut of unequal channels"} if len(shapes) > 1 else set()
        elif isinstance(node, MaxPool):
            found |= {"maxpool stride 1"} if node.stride_x == 1 else set()
            found |= {"maxpool odd size, stride 2"} if node.size % 2 and node.stride_x == 2 else set()
        elif isinstance(node, Upsample) and node.scale != 1:
            found.add("upsample scale")
    return found


def test_own_cfgs_cover_every_section_activation_dialect_and_decode():
    graphs = [load_graph(path) for path in CFGS]
    sections = [section for graph in graphs for section in graph.sections]
    assert {section.name for section in sections} == set(SECTIONS) | {"net", "network"}
    spellings = {section.entries["activation"].value for section in sections
                 if "activation" in section.entries}
    assert {canonical_activation(name) for name in spellings} == set(ACTIVATIONS)
    assert {graph.dialect for graph in graphs} == set(DIALECTS)
    assert {head.decode for graph in graphs for head in graph.heads} == DECODES
    assert set().union(*map(_features, graphs)) == {
        "grouped conv", "depthwise conv", "dilated conv", "stride_x != stride_y", "conv without BatchNorm",
        "even kernel", "route groups", "route by absolute index", "shortcut of several from",
        "shortcut of unequal channels", "maxpool stride 1", "maxpool odd size, stride 2", "upsample scale"}
    warnings = [warning for graph in graphs for warning in graph.warnings]
    assert len(warnings) == 1 and "aliases-activations.cfg:81: [conv] dilation=2: padded 1x2 per side" in warnings[0]


def test_opencv_checks_most_of_them():
    assert len(OPENCV_READS) >= 7 and {path.stem for path in OPENCV_REFUSES} == {"aliases-activations",
                                                                                 "yolov5-dialect", "dfl-attention"}


def test_aliases_build_the_graph_of_their_full_names():
    text = own_cfg("aliases-activations").read_text()
    full = text.replace("[network]", "[net]").replace("[conv]", "[convolutional]")
    full = full.replace("[max]", "[maxpool]").replace("[avg]", "[avgpool]")
    assert full != text
    assert build_graph(parse_cfg_text(text)).nodes == build_graph(parse_cfg_text(full)).nodes


# Darknet's formulas (src/activations.h; hardswish as YOLOv5 defines it), written out independently of the
# package so an IR that computes an activation wrongly is caught even where OpenCV lacks that activation.
FORMULAS = {
    "linear": lambda x: x,
    "leaky": lambda x: np.where(x > 0, x, 0.1 * x),
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "hard_mish": lambda x: np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0)),
    "hardswish": lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
    "elu": lambda x: np.where(x >= 0, x, np.exp(x) - 1),
    "selu": lambda x: np.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(0.797885 * x + 0.035677 * x ** 3)),
}

ONE_CONV = """[net]
width=24
height=16
channels=3

[convolutional]
batch_normalize=1
filters=18
size=3
stride=1
pad=1
activation={}

[yolo]
mask=0,1,2
anchors=4,4, 8,8, 12,12
classes=1
num=3
"""


def test_formulas_cover_every_activation():
    assert set(FORMULAS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_ir_activation_equals_darknet_formula_on_opencv_conv(name, tmp_path):
    graph = build_graph(parse_cfg_text(ONE_CONV.format(name)))
    linear = build_graph(parse_cfg_text(ONE_CONV.format("linear")))
    weights = random_weights(graph, 5)
    weights.layers[0].variance[:] = 0.005  # BatchNorm spreads the pre-activations over about -12..12
    frame = random_bgr(graph)
    before = opencv_heads(opencv_net(linear, weights, tmp_path / "linear"), linear, to_blob(frame))[0]
    assert before.min() < -3 and before.max() > 7  # every branch of every formula is exercised
    compiled = compile_f32(build_ir(graph, weights, IrOptions("raw")).model)
    assert relative_error(compiled(frame)[0], FORMULAS[name](before.astype(np.float64))) < 1e-4


SEVERAL_FROM = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=24
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

{shortcuts}

[convolutional]
filters=18
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,4, 8,8, 12,12
classes=1
num=3
"""


def test_shortcut_of_several_from_equals_chained_shortcuts_in_opencv(tmp_path):
    """OpenCV's importer adds only the first from=, so the reference chains one shortcut per from."""
    several = build_graph(parse_cfg_text(SEVERAL_FROM.format(
        shortcuts="[shortcut]\nfrom=-2,-3\nactivation=mish")))
    chained = build_graph(parse_cfg_text(SEVERAL_FROM.format(
        shortcuts="[shortcut]\nfrom=-2\nactivation=linear\n\n[shortcut]\nfrom=-4\nactivation=mish")))
    weights = random_weights(several, 7)
    chained_weights = random_weights(chained, 0)
    chained_weights.layers = {index + (index > 3): layer for index, layer in weights.layers.items()}
    frame = random_bgr(several)
    net = opencv_net(chained, chained_weights, tmp_path / "chained")
    reference = opencv_heads(net, chained, to_blob(frame))
    compiled = compile_f32(build_ir(several, weights, IrOptions("raw")).model)
    assert relative_error(compiled(frame)[0], reference[0]) < 1e-4
