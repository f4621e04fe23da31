"""Synthetic model weights for tests (the package's own, under the name the tests import them by), and the one
parity measure every test compares outputs with."""

import numpy as np

from pruneyolo.data.random_weights import random_weights, spike_and_slab

__all__ = ["random_weights", "relative_error", "spike_and_slab"]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max|actual - expected| / max(1, max|expected|): the parity measure of the issues."""
    return float(np.abs(actual - expected).max() / max(1.0, float(np.abs(expected).max())))
