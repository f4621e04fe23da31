"""Every corpus cfg: parse, weights round trip, codegen, IR save/reload, parity with OpenCV (or codegen)."""

from __future__ import annotations

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

from pruneyolo.convert import save_ir, to_openvino
from pruneyolo.errors import CfgError
from pruneyolo.graph import load_graph
from pruneyolo.weights import expected_floats, random_weights, read_weights, weights_bytes, write_weights


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


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.stem)
def test_corpus_cfg_end_to_end(path, tmp_path):
    graph = load_graph(path, PARITY_SIZE)
    weights = random_weights(graph, seed=len(path.name))
    weights_path = tmp_path / "model.weights"
    write_weights(weights_path, graph, weights)
    data = weights_path.read_bytes()
    assert len(data) == 20 + 4 * expected_floats(graph)
    assert weights_bytes(graph, read_weights(weights_path, graph)) == data

    xml = save_ir(to_openvino(graph, weights, heads="raw"), tmp_path / "model.xml")
    compiled = compile_f32(xml)
    frame = random_bgr(graph)
    results = compiled(frame)
    heads = [results[output] for output in compiled.outputs]
    assert [h.shape[1:] for h in heads] == [graph.nodes[head.inputs[0]].out_shape for head in graph.heads]

    blob = to_blob(frame)
    net = opencv_net(graph, weights, tmp_path / "opencv")
    if net is None:  # OpenCV lacks a section or activation: compare with the generated PyTorch file
        module = load_generated(graph, tmp_path / "generated.py").load_darknet_weights(weights_path)
        with torch.no_grad():
            reference = [head.numpy() for head in module(torch.from_numpy(blob))]
    else:
        shapes = opencv_shapes(net, graph)
        assert len(shapes) >= len(graph.convs)
        assert {index: graph.nodes[index].out_shape for index in shapes} == shapes
        reference = opencv_heads(net, graph, blob)
    errors = [relative_error(actual, expected) for actual, expected in zip(heads, reference)]
    assert max(errors) < 1e-3, errors
    assert max(float(np.abs(h).max()) for h in reference) > 0.05  # a real signal, not all zeros
