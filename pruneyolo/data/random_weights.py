"""Synthetic Darknet weights, for benchmarks and tests that need a model without training one: random weights
that keep a deep network's activations O(1), and gammas shaped as sparsity training leaves them."""

from __future__ import annotations

import numpy as np

from pruneyolo.darknet.graph import Graph
from pruneyolo.darknet.weights import ConvWeights, DarknetWeights


def random_weights(graph: Graph, seed: int = 0, *, gamma=None) -> DarknetWeights:
    """Random test weights: He-scaled zero-mean kernels, gamma in [0.2, 0.6) (or `gamma(rng, n)`).

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


def spike_and_slab(rng: np.random.Generator, count: int, spike_fraction: float = 0.85) -> np.ndarray:
    """Gammas as sparsity training leaves them: most near 0 (|N(0, 0.01)|), the rest from U(0.5, 1.5)."""
    spike = np.abs(rng.normal(0, 0.01, count))
    slab = rng.uniform(0.5, 1.5, count)
    return np.where(rng.random(count) < spike_fraction, spike, slab).astype(np.float32)
