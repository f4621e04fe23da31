"""Darknet .weights in and out of a graph, byte for byte."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pruneyolo.darknet.graph import Conv, Graph
from pruneyolo.errors import WeightsError
from pruneyolo.files import atomic_write

BN_EPS = 1e-6  # darknet's CPU BatchNorm eps (OpenCV's importer's too): what a .weights file's variances assume


@dataclass
class ConvWeights:
    """One conv's arrays in darknet order; absent parts are None (no BN, no conv, no bias)."""

    bias: np.ndarray | None
    scales: np.ndarray | None = None
    mean: np.ndarray | None = None
    variance: np.ndarray | None = None
    weights: np.ndarray | None = None

    def arrays(self) -> list[np.ndarray]:
        parts = (self.bias, self.scales, self.mean, self.variance, self.weights)
        return [part for part in parts if part is not None]


@dataclass
class DarknetWeights:
    """Header fields plus one ConvWeights per conv layer index."""

    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0
    layers: dict[int, ConvWeights] = field(default_factory=dict)
    random_seed: int | None = None  # set for --weights random: no trained model, whatever else is written

    @property
    def header_bytes(self) -> bytes:
        head = struct.pack("<3i", self.major, self.minor, self.revision)
        wide = self.major * 10 + self.minor >= 2
        return head + struct.pack("<Q" if wide else "<I", self.seen)


def part_sizes(conv: Conv) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each array a conv stores in a .weights file, in file order."""
    parts: list[tuple[str, tuple[int, ...]]] = []
    if conv.has_bias:
        parts.append(("bias", (conv.filters,)))
    if conv.batch_normalize:
        parts += [("scales", (conv.filters,)), ("mean", (conv.filters,)), ("variance", (conv.filters,))]
    if conv.has_conv:
        parts.append(("weights", conv.weight_shape))
    return parts


def expected_floats(graph: Graph) -> int:
    """How many float32 values a .weights file for this graph holds after its header."""
    return sum(int(np.prod(shape)) for conv in graph.weighted_convs for _, shape in part_sizes(conv))


def read_weights(path, graph: Graph) -> DarknetWeights:
    """Read a .weights file for `graph`; a size mismatch names the layer that ran out and the byte counts."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weights: {exc.strerror}") from None
    if len(data) < 16:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for a Darknet weights header (16 or 20)")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    if major < 0 or minor < 0 or major > 1000 or minor > 1000:
        raise WeightsError(f"{path}: header version {major}.{minor}.{revision} is not a Darknet weights header")
    wide = major * 10 + minor >= 2
    seen = struct.unpack_from("<Q" if wide else "<I", data, 12)[0]
    offset = 20 if wide else 12 + 4
    needed_bytes = offset + 4 * expected_floats(graph)
    result = DarknetWeights(major, minor, revision, seen)
    for conv in graph.weighted_convs:
        arrays = {}
        for name, shape in part_sizes(conv):
            count = int(np.prod(shape))
            if offset + 4 * count > len(data):
                raise WeightsError(
                    f"{path}: ran out at byte {len(data)} in layer {conv.index} (conv, line {conv.line}) reading "
                    f"{name}: the cfg needs {needed_bytes} bytes, the file has {len(data)}")
            arrays[name] = np.frombuffer(data, "<f4", count, offset).reshape(shape).copy()
            offset += 4 * count
        result.layers[conv.index] = ConvWeights(**{"bias": None, **arrays})
    if offset != len(data):
        raise WeightsError(f"{path}: {len(data) - offset} bytes left over after the last layer: the cfg needs "
                           f"{needed_bytes} bytes, the file has {len(data)} (wrong cfg for these weights?)")
    return result


def random_weights(graph: Graph, seed: int = 0, *, gamma=None) -> DarknetWeights:
    """Random weights: He-scaled zero-mean kernels, gamma in [0.2, 0.6) (or `gamma(rng, n)`).

    Zero-mean kernels and modest gammas keep a deep random net's activations O(1) without amplifying
    rounding differences chaotically, so two correct implementations agree to ~1e-6.
    """
    rng = np.random.default_rng(seed)
    result = DarknetWeights()
    for conv in graph.weighted_convs:
        n = conv.filters
        fan_in = max(1, (conv.in_channels // conv.groups) * conv.size * conv.size)
        layer = ConvWeights(bias=None)
        if conv.has_bias:
            layer.bias = rng.normal(0, 0.1, n).astype(np.float32)
        if conv.batch_normalize:
            layer.scales = (gamma(rng, n) if gamma else rng.uniform(0.2, 0.6, n)).astype(np.float32)
            layer.mean = rng.normal(0, 0.1, n).astype(np.float32)
            layer.variance = rng.uniform(0.5, 1.5, n).astype(np.float32)
        if conv.has_conv:
            kernels = rng.normal(0, 1, conv.weight_shape)
            if fan_in > 1:
                kernels -= kernels.mean(axis=(1, 2, 3), keepdims=True)
            layer.weights = (kernels * np.sqrt(2.0 / fan_in)).astype(np.float32)
        result.layers[conv.index] = layer
    return result


def weights_bytes(graph: Graph, weights: DarknetWeights) -> bytes:
    """Serialise weights in darknet order, checking every array's shape against the graph."""
    chunks = [weights.header_bytes]
    for conv in graph.weighted_convs:
        layer = weights.layers.get(conv.index)
        if layer is None:
            raise WeightsError(f"no weights for layer {conv.index} (conv, line {conv.line})")
        for name, shape in part_sizes(conv):
            array = getattr(layer, name)
            if array is None or tuple(array.shape) != shape:
                got = None if array is None else tuple(array.shape)
                raise WeightsError(f"layer {conv.index} {name}: shape {got}, the cfg needs {shape}")
            chunks.append(np.ascontiguousarray(array, "<f4").tobytes())
    return b"".join(chunks)


def write_weights(path, graph: Graph, weights: DarknetWeights) -> None:
    """Write a .weights file atomically."""
    atomic_write(path, weights_bytes(graph, weights))
