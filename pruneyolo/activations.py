"""The one activation table: cfg spellings -> canonical names, shared by graph, codegen and the torch layers."""

CANONICAL = (
    "linear", "leaky", "relu", "relu6", "logistic", "tanh", "mish", "swish",
    "hard_mish", "hardswish", "elu", "selu", "gelu",
)

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
    return key if key in CANONICAL else None
