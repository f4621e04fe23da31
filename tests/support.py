"""Shared by the graph, codegen and convert tests: reference runs in OpenCV, the IR-parity checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import torch
from fixtures import random_weights, relative_error
from prune_support import write_model

from pruneyolo.darknet.graph import Conv, Graph, load_graph
from pruneyolo.darknet.weights import (
    DarknetWeights,
    expected_floats,
    read_weights,
    weights_bytes,
    write_weights,
)
from pruneyolo.export.build import IrOptions, build_ir
from pruneyolo.export.convert import save_ir
from pruneyolo.nn.codegen import class_name_for, render_model

# Corpus cfgs pruneyolo rejects, each with the words its one-line error must contain (see README).
REJECTED = {
    "AlexeyAB__darknet__cfg__Gaussian_yolov3_BDD.cfg": "unknown section [gaussian_yolo]",
    "AlexeyAB__darknet__cfg__yolov3-tiny_occlusion_track.cfg": "unknown section [crnn]",
    "AlexeyAB__darknet__cfg__yolov4-tiny_contrastive.cfg": "unknown section [local_avgpool]",
    "SpursLipu__YOLOv3v4-ModelCompression-MultidatasetTraining-Multibackbone__cfg__yolov3-mobilenet__"
    "yolov3-mobilenet-coco.cfg": "unknown section [depthwise]",
    "SpursLipu__YOLOv3v4-ModelCompression-MultidatasetTraining-Multibackbone__cfg__yolov3__yolov3-asff.cfg":
        "from= (ASFF fusion)",
    "whitestarrain__AbandonedObjectDetect__cfg__yolov5x6_v6.cfg": "route inputs differ in spatial size",
}


PARITY_SIZE = (128, 128)  # small, and halves evenly down to the stride-64 heads of P6 models


def random_bgr(graph: Graph, seed: int = 0) -> np.ndarray:
    """A random u8 BGR frame [1, H, W, 3] at the graph's input size."""
    _, height, width = graph.input_shape
    return np.random.default_rng(seed).integers(0, 256, (1, height, width, 3), dtype=np.uint8)


def to_blob(frame: np.ndarray) -> np.ndarray:
    """What the IR's embedded pre-processing does, in OpenCV: NCHW RGB float / 255."""
    return cv2.dnn.blobFromImage(frame[0], 1 / 255.0, swapRB=True)


def opencv_layer_name(graph: Graph, index: int, names: set[str]) -> str:
    """OpenCV's name for a darknet layer's final output (a conv's activation is its own layer, index + 1)."""
    node = graph.nodes[index]
    candidates = [f"{node.activation}_{index + 1}"] if isinstance(node, Conv) else []
    candidates += [f"bn_{index}", f"conv_{index}"]
    return next(name for name in candidates if name in names)


def opencv_net(graph: Graph, weights: DarknetWeights, stem: Path):
    """OpenCV's Darknet importer on the graph's cfg (at its input size) and weights, or None if it refuses."""
    cv2.setNumThreads(1)
    try:
        return cv2.dnn.readNetFromDarknet(*(str(path) for path in write_model(graph, weights, stem)))
    except cv2.error:
        return None


def opencv_heads(net, graph: Graph, blob: np.ndarray) -> list[np.ndarray]:
    """OpenCV's raw head tensors (the outputs of the layer before each [yolo])."""
    names = set(net.getLayerNames())
    net.setInput(blob)
    return list(net.forward([opencv_layer_name(graph, head.inputs[0], names) for head in graph.heads]))


def opencv_shapes(net, graph: Graph) -> dict[int, tuple[int, ...]]:
    """Output shape (C, H, W) OpenCV infers for each darknet layer it names conv/concat/shortcut/pool/upsample."""
    layer_ids, _, out_shapes = net.getLayersShapes([1, *graph.input_shape])
    names = net.getLayerNames()
    shapes = {}
    for layer_id, layer_shapes in zip(np.ravel(layer_ids), out_shapes, strict=True):
        kind, _, index = names[layer_id - 1].rpartition("_") if layer_id else ("", "", "")
        named = kind in ("conv", "concat", "shortcut", "pool", "upsample") and index.isdigit()
        if named and (kind != "conv" or graph.nodes[int(index)].kind == "conv"):
            shapes[int(index)] = tuple(int(v) for v in np.ravel(layer_shapes[0])[1:])
    return shapes


def load_generated(graph: Graph, path: Path):
    """Render the model file, import it and return an instance of its class."""
    path.write_text(render_model(graph))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name_for(graph.path))().eval()


def compile_f32(xml_or_model, device: str = "CPU") -> ov.CompiledModel:
    """Compiled with f32 inference precision (this CPU would otherwise run bf16)."""
    core = ov.Core()
    return core.compile_model(xml_or_model, device, {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})


def opencv_reads(path: Path) -> bool:
    """Whether OpenCV's Darknet importer accepts the cfg (sections, activations) at all."""
    try:
        cv2.dnn.readNetFromDarknet(str(path))
    except cv2.error:
        return False
    return True


def ir_heads_and_files(path: Path, tmp_path: Path):
    """Parse, random weights (byte-exact round trip), IR built, saved, reloaded and run on a random frame."""
    graph = load_graph(path, PARITY_SIZE)
    weights = random_weights(graph, seed=len(path.name))
    weights_path = tmp_path / "model.weights"
    write_weights(weights_path, graph, weights)
    data = weights_path.read_bytes()
    assert len(data) == 20 + 4 * expected_floats(graph)
    assert weights_bytes(graph, read_weights(weights_path, graph)) == data

    compiled = compile_f32(save_ir(build_ir(graph, weights, IrOptions("raw")).model, tmp_path / "model.xml"))
    frame = random_bgr(graph)
    results = compiled(frame)
    heads = [results[output] for output in compiled.outputs]
    assert [h.shape[1:] for h in heads] == [graph.nodes[head.inputs[0]].out_shape for head in graph.heads]
    return graph, weights, weights_path, to_blob(frame), heads


def assert_parity(heads: list[np.ndarray], reference: list[np.ndarray]) -> None:
    """Every head within 1e-3 (relative) of the reference, and the reference not all near zero."""
    errors = [relative_error(actual, expected) for actual, expected in zip(heads, reference, strict=True)]
    assert max(errors) < 1e-3, errors
    assert max(float(np.abs(h).max()) for h in reference) > 0.05  # a real signal, not all zeros


def assert_ir_equals_opencv(path: Path, tmp_path: Path) -> None:
    """The IR's heads equal OpenCV's Darknet importer's, and OpenCV's layer shapes equal the graph's."""
    graph, weights, _, blob, heads = ir_heads_and_files(path, tmp_path)
    net = opencv_net(graph, weights, tmp_path / "opencv")
    assert net is not None, "OpenCV reads this cfg at its own size but not at the test size"
    shapes = opencv_shapes(net, graph)
    assert len(shapes) >= len(graph.convs)
    assert {index: graph.nodes[index].out_shape for index in shapes} == shapes
    assert_parity(heads, opencv_heads(net, graph, blob))


def assert_ir_equals_generated(path: Path, tmp_path: Path) -> None:
    """The IR's heads equal the generated PyTorch file's (for cfgs OpenCV cannot load)."""
    graph, _, weights_path, blob, heads = ir_heads_and_files(path, tmp_path)
    module = load_generated(graph, tmp_path / "generated.py").load_darknet_weights(weights_path)
    with torch.no_grad():
        assert_parity(heads, [head.numpy() for head in module(torch.from_numpy(blob))])
