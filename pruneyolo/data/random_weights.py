"""Synthetic Darknet weights, for benchmarks and tests that need a model without training one: random weights
(darknet.weights.random_weights, what `--weights random` uses) and gammas shaped as sparsity training leaves them."""

from __future__ import annotations

import numpy as np

from pruneyolo.darknet.weights import random_weights

__all__ = ["random_weights", "spike_and_slab"]


def spike_and_slab(rng: np.random.Generator, count: int, spike_fraction: float = 0.85) -> np.ndarray:
    """Gammas as sparsity training leaves them: most near 0 (|N(0, 0.01)|), the rest from U(0.5, 1.5)."""
    spike = np.abs(rng.normal(0, 0.01, count))
    slab = rng.uniform(0.5, 1.5, count)
    return np.where(rng.random(count) < spike_fraction, spike, slab).astype(np.float32)
