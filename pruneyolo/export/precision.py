"""The two precisions, each with one vocabulary and the same aliases wherever a name is typed.

Weight storage (fp32, fp16, int8) is how an IR's weights are written: `convert --storage`, bench's IR files,
the IR's metadata. Inference precision (f32, bf16, f16) is what a device computes in: OpenVINO's
INFERENCE_PRECISION_HINT, `run --precision`, `prune --target-* --precision`. Any spelling of a width (f32, fp32,
float32; f16, fp16, float16, half; bf16, bfloat16; int8, i8) names it in either vocabulary.
"""

from __future__ import annotations

from pruneyolo.errors import PruneyoloError

WIDTHS = {"f32": "32", "fp32": "32", "float32": "32", "float": "32", "f16": "16", "fp16": "16", "float16": "16",
          "half": "16", "bf16": "bf16", "bfloat16": "bf16", "int8": "8", "i8": "8"}  # any spelling -> its width
STORAGE = {"32": "fp32", "16": "fp16", "8": "int8"}  # width -> weight storage name
INFERENCE = {"32": "f32", "bf16": "bf16", "16": "f16"}  # width -> INFERENCE_PRECISION_HINT value


def _named(name: str, names: dict[str, str], what: str) -> str:
    """`name` in one vocabulary (any spelling, any case), else one line listing that vocabulary."""
    width = WIDTHS.get(str(name).strip().lower())
    if width not in names:
        raise PruneyoloError(f"{what} {name!r}: choose one of {', '.join(names.values())}")
    return names[width]


def weight_storage(name: str) -> str:
    """A weight storage name: fp32, fp16 or int8."""
    return _named(name, STORAGE, "weight storage")


def inference_precision(name: str) -> str:
    """An inference precision name, as INFERENCE_PRECISION_HINT takes it: f32, bf16 or f16."""
    return _named(name, INFERENCE, "inference precision")


def precision_name(value) -> str:
    """A device-reported precision (an ov.Type, its repr or a hint string) as f32 / bf16 / f16."""
    text = str(value).lower()
    return next((INFERENCE[width] for name, width in WIDTHS.items()
                 if width in INFERENCE and (f"'{name}'" in text or text == name)), text)
