"""Cfgs darknet accepts and a stricter reading would not: [yolo] anchors beyond or short of num, dilated convs,
share_index, stride_x/stride_y and darknet's maxpool defaults; each with one warning line naming file:line.

Values are checked against a numpy twin written from darknet's C rules (src/convolutional_layer.c, im2col,
maxpool_layer.c) and, where OpenCV's importer implements the feature, against OpenCV.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fixtures import random_weights
from support import (
    compile_f32,
    load_generated,
    opencv_heads,
    opencv_net,
    opencv_shapes,
    random_bgr,
    relative_error,
    to_blob,
)

from pruneyolo.cli.main import main
from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import build_graph, load_graph
from pruneyolo.darknet.weights import BN_EPS, expected_floats, read_weights, write_weights
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.errors import CfgError, PruneyoloError
from pruneyolo.export.build import IrOptions, build_ir
from pruneyolo.nn import layers
from pruneyolo.nn.build import build_model
from pruneyolo.prune.pruning import prune

HEAD = {"mask": "0,1,2", "anchors": "10,14, 23,27, 37,58", "classes": 1, "num": 3}
LINEAR_HEAD = [("convolutional", {"filters": 18, "size": 1, "activation": "linear"}), ("yolo", HEAD)]


def conv(**options) -> tuple[str, dict]:
    return "convolutional", {"batch_normalize": 1, "filters": 8, "size": 3, "pad": 1, "activation": "leaky",
                             **options}


def cfg_text(layers: list[tuple[str, dict]], width: int = 40, height: int = 24) -> str:
    blocks = [f"[net]\nwidth={width}\nheight={height}\nchannels=3"]
    blocks += ["\n".join([f"[{name}]"] + [f"{key}={value}" for key, value in options.items()])
               for name, options in layers]
    return "\n\n".join(blocks) + "\n"


def write_cfg(tmp_path, layers, name="lenient.cfg", **size) -> str:
    path = tmp_path / name
    path.write_text(cfg_text(layers, **size))
    return str(path)


def line_of(path: str, text: str, occurrence: int = 1) -> int:
    """The line number of the `occurrence`-th line of a file that starts with `text`."""
    lines = [n for n, line in enumerate(Path(path).read_text().splitlines(), 1) if line.startswith(text)]
    return lines[occurrence - 1]


# --- darknet in numpy, from its C source ------------------------------------------------------------------

def darknet_conv(x: np.ndarray, options: dict, arrays) -> np.ndarray:
    """convolutional_layer.c: output size (h + 2*pad - size) / stride + 1, im2col padded pad*dilation."""
    size, stride = options.get("size", 1), options.get("stride", 1)
    stride_x, stride_y = options.get("stride_x", stride), options.get("stride_y", stride)
    stride_x, stride_y = (value if value >= 1 else stride for value in (stride_x, stride_y))
    dilation = 1 if size == 1 else options.get("dilation", 1)
    pad = size // 2 if options.get("pad") else options.get("padding", 0)
    height, width = x.shape[1:]
    out_h, out_w = (height + 2 * pad - size) // stride_y + 1, (width + 2 * pad - size) // stride_x + 1
    out = np.zeros((options["filters"], out_h, out_w))
    for ky in range(size):
        rows = np.arange(out_h) * stride_y + ky * dilation - pad * dilation
        for kx in range(size):
            cols = np.arange(out_w) * stride_x + kx * dilation - pad * dilation
            inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
            patch = x[:, rows.clip(0, height - 1)][:, :, cols.clip(0, width - 1)] * inside
            out += np.einsum("fc,chw->fhw", arrays.weights[:, :, ky, kx], patch)
    shape = (-1, 1, 1)
    if options.get("batch_normalize"):
        out = (out - arrays.mean.reshape(shape)) / np.sqrt(arrays.variance.reshape(shape) + BN_EPS)
        out = out * arrays.scales.reshape(shape)
    out = out + arrays.bias.reshape(shape)
    return np.where(out > 0, out, 0.1 * out) if options["activation"] == "leaky" else out


def darknet_maxpool(x: np.ndarray, options: dict) -> np.ndarray:
    """maxpool_layer.c: stride 1 and size = stride by default, padding size - 1, offset -(padding / 2)."""
    stride = options.get("stride", 1)
    size = options.get("size", stride)
    stride_x, stride_y = options.get("stride_x", stride), options.get("stride_y", stride)
    padding = options.get("padding", size - 1)
    channels, height, width = x.shape
    out_h, out_w = (height + padding - size) // stride_y + 1, (width + padding - size) // stride_x + 1
    out = np.full((channels, out_h, out_w), -np.inf)
    for n in range(size):
        rows = np.arange(out_h) * stride_y + n - padding // 2
        for m in range(size):
            cols = np.arange(out_w) * stride_x + m - padding // 2
            inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
            patch = x[:, rows.clip(0, height - 1)][:, :, cols.clip(0, width - 1)]
            out = np.maximum(out, np.where(inside, patch, -np.inf))
    return out


def darknet_heads(layers: list[tuple[str, dict]], weights, image: np.ndarray) -> list[np.ndarray]:
    """The raw input of every [yolo] head; a share_index conv reads the arrays of the layer it names."""
    outputs: list[np.ndarray] = []
    heads = []
    x = image.astype(np.float64)
    for index, (name, options) in enumerate(layers):
        if name == "convolutional":
            owner = index
            while "share_index" in layers[owner][1]:  # darknet's share_layer hands on its owner's arrays
                share = layers[owner][1]["share_index"]
                owner = share if share >= 0 else owner + share
            x = darknet_conv(x, options, weights.layers[owner])
        elif name == "maxpool":
            x = darknet_maxpool(x, options)
        elif name == "shortcut":
            x = x + outputs[index + int(options["from"])]
        elif name == "yolo":
            heads.append(x)
        outputs.append(x)
    return heads


def check_ir_against_numpy(graph, layers, weights, seed=0):
    frame = random_bgr(graph, seed)
    ir = compile_f32(build_ir(graph, weights, IrOptions("raw")).model)(frame)
    expected = darknet_heads(layers, weights, to_blob(frame)[0])
    for index, reference in enumerate(expected):
        assert relative_error(ir[index][0], reference) < 1e-5


# --- [yolo] anchors ----------------------------------------------------------------------------------------

def test_more_anchors_than_num_uses_the_first_num_pairs_with_one_warning(tmp_path):
    extra = {**HEAD, "anchors": "10,14, 23,27, 37,58, 81,82, 135,169"}
    path = write_cfg(tmp_path, [conv(), LINEAR_HEAD[0], ("yolo", extra)])
    canonical = load_graph(write_cfg(tmp_path, [conv(), *LINEAR_HEAD], "canonical.cfg"))
    graph = load_graph(path)
    assert graph.heads[0].anchors == canonical.heads[0].anchors == ((10, 14), (23, 27), (37, 58))
    assert ModelInfo.from_graph(graph).heads == ModelInfo.from_graph(canonical).heads
    expected = (f"{path}:{line_of(path, 'anchors=')}: [yolo] anchors= lists 10 numbers for num=3: the first 6 are "
                "used and the rest ignored, as darknet does")
    assert graph.warnings == (expected,)


@pytest.mark.parametrize("anchors, mask", [
    ("10,14, 23,27, 37,58", "0,1,2"),  # 3 of num=9 pairs
    ("10,14, 23,27, 37,58, 81", "0,1,2"),  # and half a fourth one, which no mask index uses
    ("10,14, 23,27, 37,58, 81,82", "1,2,3"),
])
def test_fewer_pairs_than_num_is_accepted_when_every_mask_index_has_one(anchors, mask, tmp_path):
    path = write_cfg(tmp_path, [conv(), LINEAR_HEAD[0], ("yolo", {**HEAD, "anchors": anchors, "mask": mask,
                                                                  "num": 9})])
    graph = load_graph(path)
    pairs = [(10, 14), (23, 27), (37, 58), (81, 82)]
    assert graph.heads[0].head_anchors == tuple(pairs[int(m)] for m in mask.split(","))
    (warning,) = graph.warnings
    assert warning.startswith(f"{path}:{line_of(path, 'anchors=')}: [yolo] anchors= gives ") and "num=9" in warning


@pytest.mark.parametrize("section, options, missing", [
    ("yolo", {**HEAD, "mask": "3,4,5", "num": 6}, 3),
    ("yolo", {**HEAD, "anchors": "10,14, 23,27, 37", "mask": "0,1,2"}, 2),  # index 2 has a width only
    ("region", {"anchors": "1,1, 2,2, 3,3", "classes": 1, "num": 4}, 3),  # [region] uses every index below num
])
def test_a_mask_index_without_an_anchor_is_one_line_naming_it(section, options, missing, tmp_path):
    filters = 24 if section == "region" else 18
    path = write_cfg(tmp_path, [conv(), ("convolutional", {"filters": filters, "size": 1, "activation": "linear"}),
                                (section, options)])
    result = CliRunner().invoke(main, ["inspect", path])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}:{line_of(path, 'anchors=')}: [{section}] mask index {missing} "
                                    "has no anchor")
    assert result.output.count("\n") == 1


# --- dilation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, dilation, stride, expected", [
    (3, 2, 1, (24, 40)), (3, 4, 2, (12, 20)), (5, 2, 1, (24, 40)), (5, 3, 3, (8, 14)), (7, 2, 2, (12, 20)),
])
def test_dilated_conv_keeps_darknets_output_size_and_a_shortcut_over_it(size, dilation, stride, expected, tmp_path):
    layers = [conv(stride=stride), conv(size=size, dilation=dilation), ("shortcut", {"from": -2}),
              *LINEAR_HEAD]
    graph = load_graph(write_cfg(tmp_path, layers))
    assert graph.nodes[1].out_shape == (8, *expected) == graph.nodes[2].out_shape
    assert graph.nodes[1].padding == size // 2 * dilation
    net = opencv_net(graph, random_weights(graph), tmp_path / "opencv")  # its shape rule is darknet's
    assert opencv_shapes(net, graph)[1] == graph.nodes[1].out_shape


def test_dilation_warns_once_and_is_ignored_on_1x1(tmp_path):
    path = write_cfg(tmp_path, [conv(size=3, dilation=2), conv(size=1, dilation=2), *LINEAR_HEAD])
    graph = load_graph(path)
    assert [node.dilation for node in graph.convs] == [2, 1, 1]
    first, second = graph.warnings
    assert first.startswith(f"{path}:{line_of(path, 'dilation=')}: [convolutional] dilation=2: padded 1x2")
    assert second.startswith(f"{path}:{line_of(path, 'dilation=', 2)}: [convolutional] dilation=2 on a 1x1 conv")


@pytest.mark.parametrize("options", [{"size": 4}, {"size": 3, "pad": 0, "padding": 2}, {"size": 3, "pad": 0}])
def test_dilation_where_darknets_size_and_convolution_disagree_is_one_line(options, tmp_path):
    path = write_cfg(tmp_path, [conv(dilation=2, **options), *LINEAR_HEAD])
    with pytest.raises(CfgError, match="agree only for an odd size with pad=1") as error:
        load_graph(path)
    assert str(error.value).startswith(f"{path}:{line_of(path, 'dilation=')}:")


# --- share_index ------------------------------------------------------------------------------------------

SHARED = [conv(), conv(), conv(share_index=1, activation="linear"), ("shortcut", {"from": -2}),
          conv(share_index=-2), *LINEAR_HEAD]  # layer 4 names layer 2, itself sharing layer 1's arrays


def test_share_index_has_no_arrays_in_the_weights_file_and_shares_tensors(tmp_path):
    path = write_cfg(tmp_path, SHARED)
    graph = load_graph(path)
    assert [conv.share for conv in graph.convs] == [None, None, 1, 1, None]
    own = 8 * 3 * 9 + 4 * 8 + 8 * 8 * 9 + 4 * 8 + 18 * 8 + 18
    assert expected_floats(graph) == own and graph.params == own - 2 * 2 * 8  # BN mean, variance: not params
    weights = random_weights(graph, 1)
    assert sorted(weights.layers) == [0, 1, 5]
    write_weights(tmp_path / "w.weights", graph, weights)
    assert (tmp_path / "w.weights").stat().st_size == 20 + 4 * own
    read = read_weights(tmp_path / "w.weights", graph)
    assert all(np.array_equal(a, b) for index in read.layers
               for a, b in zip(read.layers[index].arrays(), weights.layers[index].arrays(), strict=True))
    model = build_model(graph, read)
    assert model.conv2.conv.weight is model.conv1.conv.weight is model.conv4.conv.weight
    assert model.conv4.bn is model.conv1.bn
    assert type(model.conv2.act).__name__ == "Identity" and type(model.conv1.act).__name__ == "LeakyReLU"
    suffix = "uses layer 1's weights and has none in the .weights file; OpenCV's Darknet importer does not share them"
    assert graph.warnings == tuple(f"{path}:{line_of(path, 'share_index=', n)}: [convolutional] share_index: "
                                   f"layer {layer} {suffix}" for n, layer in ((1, 2), (2, 4)))


def test_share_index_ir_equals_opencv_on_the_same_net_with_the_arrays_copied(tmp_path):
    graph = load_graph(write_cfg(tmp_path, SHARED))
    weights = random_weights(graph, 2)
    copied = [(name, {k: v for k, v in options.items() if k != "share_index"}) for name, options in SHARED]
    unshared = load_graph(write_cfg(tmp_path, copied, "copied.cfg"))
    copies = copy.deepcopy(weights)
    for conv_node in graph.convs:
        copies.layers[conv_node.index] = weights.layers[conv_node.share if conv_node.share is not None
                                                        else conv_node.index]
    frame = random_bgr(graph, 3)
    ours = compile_f32(build_ir(graph, weights, IrOptions("raw")).model)(frame)[0][0]
    theirs = opencv_heads(opencv_net(unshared, copies, tmp_path / "opencv"), unshared, to_blob(frame))[0][0]
    assert relative_error(ours, theirs) < 1e-3
    check_ir_against_numpy(graph, SHARED, weights, seed=3)


@pytest.mark.parametrize("options, words", [
    ({"filters": 16}, "has other arrays (filters 16 vs 8)"),
    ({"size": 1, "pad": 0}, "has other arrays (size 1 vs 3)"),
    ({"batch_normalize": 0}, "has other arrays (batch_normalize 0 vs 1)"),
    ({"share_index": 4}, "refers to layer 4"),
    ({"share_index": -5}, "refers to layer -5"),
])
def test_share_index_that_cannot_share_is_one_line(options, words, tmp_path):
    layers = [conv(), conv(), ("maxpool", {"size": 2, "stride": 1}), conv(**{"share_index": 1, **options}),
              *LINEAR_HEAD]
    path = write_cfg(tmp_path, layers)
    with pytest.raises(CfgError, match=words.replace("(", r"\(").replace(")", r"\)")) as error:
        load_graph(path)
    assert str(error.value).startswith(f"{path}:{line_of(path, 'share_index=')}:")


def test_share_index_on_a_non_conv_layer_is_one_line(tmp_path):
    path = write_cfg(tmp_path, [conv(), ("maxpool", {"size": 2, "stride": 1}), conv(share_index=1), *LINEAR_HEAD])
    with pytest.raises(CfgError, match=r"layer 1 is a \[maxpool\], not a \[convolutional\]"):
        load_graph(path)


def test_pruning_a_weight_shared_net_is_refused_in_one_line(tmp_path):
    graph = load_graph(write_cfg(tmp_path, SHARED))
    with pytest.raises(PruneyoloError, match="layer 2 shares layer 1's weights"):
        prune(graph, random_weights(graph), 0.3)


# --- stride_x / stride_y and darknet's maxpool defaults ------------------------------------------------------

STRIDES = [conv(stride_x=2, stride_y=1), conv(stride_x=1, stride_y=2, size=5, dilation=2),
           ("maxpool", {"size": 3, "stride_x": 1, "stride_y": 2}), ("maxpool", {"size": 2}),
           ("maxpool", {"stride": 2}), conv(stride=2, stride_x=0), *LINEAR_HEAD]


def test_stride_x_and_stride_y_follow_darknets_rules(tmp_path):
    path = write_cfg(tmp_path, STRIDES)
    graph = load_graph(path)
    assert [node.out_shape[1:] for node in graph.nodes] == [
        (24, 20),  # stride_x=2: (40 + 2 - 3) // 2 + 1
        (12, 20),  # stride_y=2
        (6, 20),  # maxpool stride_y=2, padding 2: (12 + 2 - 3) // 2 + 1
        (6, 20),  # size=2 alone: stride 1, padding 1
        (3, 10),  # stride=2 alone: size 2
        (2, 5),  # stride_x=0 falls back to stride=2 in both directions
        (2, 5), (2, 5)]
    assert graph.warnings[-1] == (f"{path}:{line_of(path, 'stride_x=0')}: [convolutional] stride_x=0 is not a "
                                  "stride: stride=2 is used, as darknet does")
    check_ir_against_numpy(graph, STRIDES, random_weights(graph, 4), seed=4)


def test_every_leniency_at_once_runs_the_same_in_codegen_module_and_ir(tmp_path):
    layers = [STRIDES[0], STRIDES[1], STRIDES[2], conv(), conv(share_index=3, activation="linear"),
              ("shortcut", {"from": -2}), conv(share_index=-2), LINEAR_HEAD[0],
              ("yolo", {**HEAD, "anchors": "10,14, 23,27, 37,58, 81,82"})]
    path = write_cfg(tmp_path, layers)
    graph = load_graph(path)
    assert [conv_node.share for conv_node in graph.convs] == [None, None, None, 3, 3, None]
    weights = random_weights(graph, 5)
    write_weights(tmp_path / "all.weights", graph, weights)
    generated = load_generated(graph, tmp_path / "generated.py").load_darknet_weights(tmp_path / "all.weights")
    in_process = build_model(graph, weights)
    image = torch.rand(1, *graph.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(generated(image), in_process(image), strict=True))
    check_ir_against_numpy(graph, layers, weights, seed=5)
    keys = ["dilation=", "share_index=", "share_index=", "anchors="]
    lines = [line_of(path, key, keys[:i].count(key) + 1) for i, key in enumerate(keys)]
    assert [warning.split(": [")[0] for warning in graph.warnings] == [f"{path}:{line}" for line in lines]
    inspect = CliRunner().invoke(main, ["inspect", path])
    assert inspect.exit_code == 0 and inspect.output.count("warning: ") == 4
    assert "convS" in inspect.output and "5x5/1x2(2)" in inspect.output
    codegen = CliRunner().invoke(main, ["codegen", path, "-o", str(tmp_path / "model.py")])
    assert codegen.exit_code == 0, codegen.output
    assert codegen.stderr.splitlines() == [f"warning: {warning}" for warning in graph.warnings]


def test_sloppy_text_is_not_mistaken_for_a_leniency():
    graph = build_graph(parse_cfg_text(cfg_text([conv(), *LINEAR_HEAD]), "plain.cfg"), "plain.cfg")
    assert graph.warnings == ()


def test_the_standalone_layers_use_darknets_batchnorm_eps():
    assert layers.BN_EPS == BN_EPS == 1e-6
