"""What `pruneyolo bench` can time, its labels, and the IR file and precision hint of each OpenVINO row."""

OPENVINO_VARIANTS = ("ir-f32", "ir-bf16", "ir-fp16", "ir-int8")
VARIANTS = OPENVINO_VARIANTS + ("opencv", "onnxruntime", "torch")
LABELS = {"ir-f32": "IR f32", "ir-bf16": "IR bf16", "ir-fp16": "IR fp16", "ir-int8": "IR int8",
          "opencv": "OpenCV DNN", "onnxruntime": "ONNX Runtime", "torch": "PyTorch eager"}
IR_FILES = {"ir-f32": "fp32.xml", "ir-bf16": "fp32.xml", "ir-fp16": "fp16.xml", "ir-int8": "int8.xml"}
HINTS = {"ir-f32": "f32", "ir-bf16": "bf16", "ir-fp16": "f16", "ir-int8": None}  # INFERENCE_PRECISION_HINT
