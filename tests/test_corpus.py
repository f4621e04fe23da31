"""Every corpus cfg: parse, weights round trip, codegen, IR save/reload, parity with OpenCV (or codegen)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from support import (
    ACCEPTED,
    CORPUS_CFGS,
    PARITY_SIZE,
    REJECTED,
    compile_f32,
    load_generated,
    opencv_heads,
    opencv_net,
    opencv_shapes,
    random_bgr,
    relative_error,
    to_blob,
)

from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import (
    expected_floats,
    random_weights,
    read_weights,
    weights_bytes,
    write_weights,
)
from pruneyolo.errors import CfgError
from pruneyolo.export.convert import save_ir, to_openvino


def test_corpus_acceptance_count():
    assert len(CORPUS_CFGS) == 67
    assert len(ACCEPTED) >= 60


@pytest.mark.parametrize("path", [CORPUS_CFGS[0].parent / name for name in REJECTED], ids=lambda p: p.stem)
def test_rejected_with_a_clear_reason(path):
    with pytest.raises(CfgError) as error:
        load_graph(path)
    message = str(error.value)
    assert REJECTED[path.name] in message
    assert message.startswith(f"{path}:") and "\n" not in message


def _opencv_reads(path) -> bool:
    try:
        cv2.dnn.readNetFromDarknet(str(path))
    except cv2.error:
        return False
    return True


OPENCV_READS = [path for path in ACCEPTED if _opencv_reads(path)]
OPENCV_REFUSES = [path for path in ACCEPTED if path not in OPENCV_READS]


def _ir_heads_and_files(path, tmp_path):
    """Parse, random weights (byte-exact round trip), IR built, saved, reloaded and run on a random frame."""
    graph = load_graph(path, PARITY_SIZE)
    weights = random_weights(graph, seed=len(path.name))
    weights_path = tmp_path / "model.weights"
    write_weights(weights_path, graph, weights)
    data = weights_path.read_bytes()
    assert len(data) == 20 + 4 * expected_floats(graph)
    assert weights_bytes(graph, read_weights(weights_path, graph)) == data

    compiled = compile_f32(save_ir(to_openvino(graph, weights, heads="raw"), tmp_path / "model.xml"))
    frame = random_bgr(graph)
    results = compiled(frame)
    heads = [results[output] for output in compiled.outputs]
    assert [h.shape[1:] for h in heads] == [graph.nodes[head.inputs[0]].out_shape for head in graph.heads]
    return graph, weights, weights_path, to_blob(frame), heads


def _assert_parity(heads, reference):
    errors = [relative_error(actual, expected) for actual, expected in zip(heads, reference)]
    assert max(errors) < 1e-3, errors
    assert max(float(np.abs(h).max()) for h in reference) > 0.05  # a real signal, not all zeros


@pytest.mark.parametrize("path", OPENCV_READS, ids=lambda p: p.stem)
def test_ir_equals_opencv_darknet_importer(path, tmp_path):
    graph, weights, _, blob, heads = _ir_heads_and_files(path, tmp_path)
    net = opencv_net(graph, weights, tmp_path / "opencv")
    assert net is not None, "OpenCV reads this cfg at its own size but not at the test size"
    shapes = opencv_shapes(net, graph)
    assert len(shapes) >= len(graph.convs)
    assert {index: graph.nodes[index].out_shape for index in shapes} == shapes
    _assert_parity(heads, opencv_heads(net, graph, blob))


@pytest.mark.parametrize("path", OPENCV_REFUSES, ids=lambda p: p.stem)
def test_ir_equals_generated_pytorch_where_opencv_cannot_load(path, tmp_path):
    graph, _, weights_path, blob, heads = _ir_heads_and_files(path, tmp_path)
    module = load_generated(graph, tmp_path / "generated.py").load_darknet_weights(weights_path)
    with torch.no_grad():
        _assert_parity(heads, [head.numpy() for head in module(torch.from_numpy(blob))])
