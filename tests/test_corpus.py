"""Every cfg: ours (tests/data, cfgs/) and the third-party corpus where it is present (see cfg_sources): parse,
weights round trip, codegen, IR save/reload, parity with OpenCV (or with the generated PyTorch where OpenCV
cannot load it); the corpus cfgs pruneyolo rejects, each with its one-line reason.

The corpus is mostly the same networks at other widths: its cfgs take the whole path when they use a layer form
no smaller cfg (nor ours) uses; the others are parsed and their layer shapes checked against OpenCV's."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from cfg_sources import CORPUS, CORPUS_CFGS, OWN_CFGS, SHIPPED_CFGS, needs_corpus, with_corpus
from support import (
    PARITY_SIZE,
    REJECTED,
    assert_ir_equals_generated,
    assert_ir_equals_opencv,
    opencv_reads,
    opencv_shapes,
)

from pruneyolo.darknet.cfg import format_cfg
from pruneyolo.darknet.graph import Conv, Graph, load_graph
from pruneyolo.darknet.weights import expected_floats
from pruneyolo.errors import CfgError

WIDTHS = {"index", "line", "out_shape", "in_shape", "filters", "anchors", "mask", "classes"}


def layer_form(node) -> tuple:
    """What the converter sees of a node, widths, anchors and classes aside: its type, its other fields, the number
    of its inputs, and for a conv whether it is plain, grouped or depthwise."""
    form = [type(node).__name__]
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if field.name == "inputs":
            value = len(value)
        elif field.name == "groups" and isinstance(node, Conv):
            value = "plain" if value == 1 else "depthwise" if value == node.filters == node.in_channels else "grouped"
        elif field.name == "share":
            value = value is not None
        if field.name not in WIDTHS:
            form.append((field.name, value))
    return tuple(form)


def layer_forms(graph: Graph) -> set[tuple]:
    return {layer_form(node) for node in graph.nodes} | {("dialect", graph.dialect)}


def representatives(paths: list, covered: set[tuple]) -> list:
    """The cfgs, fewest parameters first, that each use a layer form no earlier one (nor `covered`) uses."""
    graphs = {path: load_graph(path, PARITY_SIZE) for path in paths}
    chosen = []
    for path in sorted(paths, key=lambda path: graphs[path].params):
        forms = layer_forms(graphs[path])
        if forms - covered:
            chosen.append(path)
            covered |= forms
    return chosen


OURS = OWN_CFGS + SHIPPED_CFGS
ACCEPTED = [path for path in CORPUS_CFGS if path.name not in REJECTED]
FULL_PATH = representatives(ACCEPTED, set().union(*(layer_forms(load_graph(path, PARITY_SIZE)) for path in OURS)))
EVERY_CFG = OURS + FULL_PATH  # the corpus part is empty where the corpus is absent
OPENCV_READS = [path for path in EVERY_CFG if opencv_reads(path)]
OPENCV_REFUSES = [path for path in EVERY_CFG if path not in OPENCV_READS]


@needs_corpus
def test_corpus_acceptance_count():
    assert len(CORPUS_CFGS) == 67
    assert {path.name for path in CORPUS_CFGS} >= set(REJECTED)
    assert len(ACCEPTED) == 61
    assert 10 <= len(FULL_PATH) < len(ACCEPTED)


@needs_corpus
@pytest.mark.parametrize("path", [CORPUS / name for name in REJECTED], ids=lambda p: p.stem)
def test_rejected_with_a_clear_reason(path):
    with pytest.raises(CfgError) as error:
        load_graph(path)
    message = str(error.value)
    assert REJECTED[path.name] in message
    assert message.startswith(f"{path}:") and "\n" not in message


@pytest.mark.parametrize("path", OPENCV_READS, ids=lambda p: p.stem)
def test_ir_equals_opencv_darknet_importer(path, tmp_path):
    assert_ir_equals_opencv(path, tmp_path)


@pytest.mark.parametrize("path", OPENCV_REFUSES, ids=lambda p: p.stem)
def test_ir_equals_generated_pytorch_where_opencv_cannot_load(path, tmp_path):
    assert_ir_equals_generated(path, tmp_path)


@pytest.mark.parametrize("path", [pytest.param(path, id=path.stem) for path in ACCEPTED if path not in FULL_PATH]
                         or [with_corpus(None, id="corpus")])
def test_other_corpus_cfgs_have_opencvs_layer_shapes(path, tmp_path):
    """OpenCV's shapes need a weights file: header (version 0.2.5, seen 0) and the graph's float count of zeros."""
    graph = load_graph(path, PARITY_SIZE)
    if opencv_reads(path):
        cfg, weights = tmp_path / "sized.cfg", tmp_path / "zeros.weights"
        cfg.write_text(format_cfg(graph.sized_sections()))
        with weights.open("wb") as file:
            file.write(np.array([0, 2, 5, 0, 0], "<i4").tobytes())
            file.truncate(20 + 4 * expected_floats(graph))
        shapes = opencv_shapes(cv2.dnn.readNetFromDarknet(str(cfg), str(weights)), graph)
        assert len(shapes) >= len(graph.convs)
        assert {index: graph.nodes[index].out_shape for index in shapes} == shapes
