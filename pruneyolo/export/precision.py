"""Precision names in one place: what users type, what OpenVINO's compile options take, what a device reports."""

from __future__ import annotations

from pruneyolo.errors import PruneyoloError

STORAGE = ("fp32", "fp16")  # how an IR's float weights are stored on disk
MEASURED = ("f32", "bf16", "f16", "int8")  # what a model can be timed at: an inference precision, or an INT8 IR
INFERENCE = {"f32": "f32", "fp32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16",
             "f16": "f16", "fp16": "f16", "float16": "f16"}  # any spelling -> INFERENCE_PRECISION_HINT value


def inference_precision(name: str) -> str:
    """A user's precision name (f32, fp32, bf16, f16, fp16, any case) as an INFERENCE_PRECISION_HINT value."""
    if name.lower() not in INFERENCE:
        raise PruneyoloError(f"precision {name!r}: choose one of f32, bf16, f16")
    return INFERENCE[name.lower()]


def precision_name(value) -> str:
    """A device-reported precision (an ov.Type, its repr or a hint string) as f32 / bf16 / f16."""
    text = str(value).lower()
    return next((short for name, short in INFERENCE.items() if f"'{name}'" in text or text == name), text)


def compile_config(hint: str, precision: str | None = None, requests: int | None = None) -> dict[str, str]:
    """OpenVINO compile options: PERFORMANCE_HINT, plus the inference precision and request count if given."""
    config = {"PERFORMANCE_HINT": hint.upper()}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = inference_precision(precision)
    if requests:
        config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(requests)
    return config
