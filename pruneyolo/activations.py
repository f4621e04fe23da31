"""The one activation table: each canonical activation's cfg aliases, PyTorch module and numpy twin.

The graph validates names against it, the module builder and codegen take the PyTorch module from it (as the
expression generated files write out), and pruning folds cut channels' constants through its numpy functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Activation:
    """`module`: the torch.nn expression (HardMish is pruneyolo's own layer); `numpy`: float64 in, float64 out."""

    module: str
    numpy: Callable[[np.ndarray], np.ndarray]


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation("nn.Identity()", lambda x: x),
    "leaky": Activation("nn.LeakyReLU(0.1)", lambda x: np.where(x > 0, x, 0.1 * x)),
    "relu": Activation("nn.ReLU()", lambda x: np.maximum(x, 0)),
    "relu6": Activation("nn.ReLU6()", lambda x: np.clip(x, 0, 6)),
    "logistic": Activation("nn.Sigmoid()", lambda x: 1 / (1 + np.exp(-x))),
    "tanh": Activation("nn.Tanh()", np.tanh),
    "mish": Activation("nn.Mish()", lambda x: x * np.tanh(np.logaddexp(0, x))),
    "swish": Activation("nn.SiLU()", lambda x: x / (1 + np.exp(-x))),
    "hard_mish": Activation("HardMish()", lambda x: np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0))),
    "hardswish": Activation("nn.Hardswish()", lambda x: x * np.clip(x + 3, 0, 6) / 6),
    "elu": Activation("nn.ELU()", lambda x: np.where(x >= 0, x, np.expm1(x))),
    "selu": Activation("nn.SELU()", lambda x: 1.0507 * np.where(x >= 0, x, 1.6732 * np.expm1(x))),
    "gelu": Activation('nn.GELU(approximate="tanh")',
                       lambda x: 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))),
}

ALIASES = {
    "silu": "swish",
    "sigmoid": "logistic",
    "h_swish": "hardswish",
    "hard_swish": "hardswish",
    "leakyrelu": "leaky",
    "identity": "linear",
}


def canonical_activation(name: str) -> str | None:
    """The canonical activation for a cfg spelling (any case), or None if unknown."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in ACTIVATIONS else None


def activate(name: str, values) -> np.ndarray:
    """Darknet's activation `name` applied to an array (float64 in, float64 out)."""
    return ACTIVATIONS[name].numpy(np.asarray(values, np.float64))
