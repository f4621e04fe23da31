"""What `pruneyolo bench` can time, its labels, and the weight storage and inference precision of each IR row."""

import os

from pruneyolo.export.precision import WIDTHS, precision_name

NO_BF16 = "PRUNEYOLO_NO_BF16"  # =1: bench and the tools treat the CPU as one without bf16 (to test that case)
CALIB_IMAGES = 32  # synthetic scenes (or images) the int8 row and the budget's int8 candidates calibrate on

# IR variant -> (weight storage, inference precision hint; None: the device's default)
IR_VARIANTS = {"ir-f32": ("fp32", "f32"), "ir-bf16": ("fp32", "bf16"), "ir-f16": ("fp16", "f16"),
               "ir-int8": ("int8", None)}
OPENVINO_VARIANTS = tuple(IR_VARIANTS)
VARIANTS = OPENVINO_VARIANTS + ("opencv", "onnxruntime", "torch")
LABELS = {"ir-f32": "IR f32", "ir-bf16": "IR bf16", "ir-f16": "IR f16", "ir-int8": "IR int8",
          "opencv": "OpenCV DNN", "onnxruntime": "ONNX Runtime", "torch": "PyTorch eager"}
IR_FILES = {variant: f"{storage}.xml" for variant, (storage, _) in IR_VARIANTS.items()}
IR_BY_WIDTH = {"32": "ir-f32", "bf16": "ir-bf16", "16": "ir-f16", "8": "ir-int8"}  # precision width -> variant
HINTS = {variant: hint for variant, (_, hint) in IR_VARIANTS.items()}  # INFERENCE_PRECISION_HINT


def variant_name(name: str) -> str:
    """A variant as typed, an IR's precision in any spelling (ir-fp16, ir-i8, IR-F32), as its name in VARIANTS."""
    name = name.strip().lower()
    width = WIDTHS.get(name.removeprefix("ir-")) if name.startswith("ir-") else None
    return IR_BY_WIDTH.get(width, name)


def cpu_capabilities(core) -> list[str]:
    """The CPU's OPTIMIZATION_CAPABILITIES (BF16, INT8, ...), without BF16 when PRUNEYOLO_NO_BF16=1."""
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return [c for c in capabilities if c != "BF16"] if os.environ.get(NO_BF16) == "1" else capabilities


def default_precision(core) -> str:
    """The precision the CPU compiles at by default (bf16 only where it has bf16)."""
    default = precision_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
    return "f32" if default == "bf16" and "BF16" not in cpu_capabilities(core) else default


def host_line(core) -> str:
    """The machine a figure was measured on, in one line: CPU, cores, capabilities, default precision, OpenVINO."""
    import openvino as ov

    return (f"host: {core.get_property('CPU', 'FULL_DEVICE_NAME')}, {os.cpu_count()} logical cores, capabilities "
            f"{' '.join(cpu_capabilities(core))}, default precision {default_precision(core)}, "
            f"OpenVINO {ov.__version__.split('-')[0]}")
