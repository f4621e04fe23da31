"""What `pruneyolo bench` can time, its labels, and the IR file and precision hint of each OpenVINO row."""

import os

NO_BF16 = "PRUNEYOLO_NO_BF16"  # =1: bench and the tools treat the CPU as one without bf16 (to test that case)

OPENVINO_VARIANTS = ("ir-f32", "ir-bf16", "ir-fp16", "ir-int8")
VARIANTS = OPENVINO_VARIANTS + ("opencv", "onnxruntime", "torch")
LABELS = {"ir-f32": "IR f32", "ir-bf16": "IR bf16", "ir-fp16": "IR fp16", "ir-int8": "IR int8",
          "opencv": "OpenCV DNN", "onnxruntime": "ONNX Runtime", "torch": "PyTorch eager"}
IR_FILES = {"ir-f32": "fp32.xml", "ir-bf16": "fp32.xml", "ir-fp16": "fp16.xml", "ir-int8": "int8.xml"}
HINTS = {"ir-f32": "f32", "ir-bf16": "bf16", "ir-fp16": "f16", "ir-int8": None}  # INFERENCE_PRECISION_HINT


def cpu_capabilities(core) -> list[str]:
    """The CPU's OPTIMIZATION_CAPABILITIES (BF16, INT8, ...), without BF16 when PRUNEYOLO_NO_BF16=1."""
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return [c for c in capabilities if c != "BF16"] if os.environ.get(NO_BF16) == "1" else capabilities
