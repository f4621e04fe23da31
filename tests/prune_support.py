"""Shared by the prune tests: random sparse-like weights, and running a model in OpenCV (relative_error is
support's, the one parity measure, importable from here too)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from fixtures import random_weights, relative_error, spike_and_slab  # noqa: F401 - tests import relative_error here

from pruneyolo.darknet.cfg import format_cfg
from pruneyolo.darknet.graph import Graph, load_graph
from pruneyolo.darknet.weights import DarknetWeights, write_weights


def sparse_model(cfg: Path, size: int, seed: int = 0) -> tuple[Graph, DarknetWeights]:
    """A cfg's graph at size x size with spike-and-slab BN gammas."""
    graph = load_graph(cfg, (size, size))
    return graph, random_weights(graph, seed, gamma=spike_and_slab)


def write_model(graph: Graph, weights: DarknetWeights, stem: Path) -> tuple[Path, Path]:
    """cfg (with [net] set to the graph's input size) and weights files for OpenCV."""
    sections = graph.sized_sections()
    cfg_path, weights_path = stem.with_name(stem.name + ".cfg"), stem.with_name(stem.name + ".weights")
    cfg_path.write_text(format_cfg(sections))
    write_weights(weights_path, graph, weights)
    return cfg_path, weights_path


def head_inputs(graph: Graph, weights: DarknetWeights, stem: Path, image: np.ndarray) -> list[np.ndarray]:
    """OpenCV's outputs of the conv before each [yolo] head (the heads themselves emit decoded boxes)."""
    cv2.setNumThreads(1)
    net = cv2.dnn.readNetFromDarknet(*(str(path) for path in write_model(graph, weights, stem)))
    net.setInput(image)
    return list(net.forward([f"conv_{head.index - 1}" for head in graph.heads]))


def random_image(graph: Graph, seed: int = 0) -> np.ndarray:
    """A random NCHW float image in [0, 1) at the graph's input size."""
    channels, height, width = graph.input_shape
    return np.random.default_rng(seed).random((1, channels, height, width), dtype=np.float32)


def zero_cut_channels(weights: DarknetWeights, masks: dict[int, np.ndarray], *, beta: bool = True) -> None:
    """Set gamma (and beta unless beta=False) of every channel a mask cuts to 0, in place."""
    for conv, mask in masks.items():
        layer = weights.layers[conv]
        if layer.scales is not None:
            layer.scales[~mask] = 0
            if beta:
                layer.bias[~mask] = 0
