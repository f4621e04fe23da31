"""A YOLOv5 export.py ONNX (decoded [1, N, 5+C] boxes in input pixels) as a pruneyolo IR.

The network stays as exported; pruneyolo adds its u8 NHWC BGR pre-processing (PrePostProcessor) and its
metadata, so `pruneyolo run` and `eval` take the IR like any other. Class names come from --names, else
from the `names` that export.py stores in the ONNX metadata, else class_<i>.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import onnx
import openvino as ov

from pruneyolo.detect.metadata import HeadInfo, ModelInfo
from pruneyolo.errors import ArgumentError, PruneyoloError
from pruneyolo.export.convert import embed_preprocessing
from pruneyolo.export.precision import weight_storage
from pruneyolo.yolov5.mapping import DEFAULT_SIZE

LARGEST_STRIDES = (32, 64)
ANCHORS_PER_CELL = 3
YOLOV5_SCALE_X_Y = 2.0


def onnx_metadata(path: str) -> dict[str, str]:
    """The ONNX file's metadata_props (export.py stores 'stride' and 'names' there)."""
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise PruneyoloError(f"{path}: cannot read the ONNX: {str(exc).splitlines()[0] if str(exc) else exc}") \
            from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def metadata_names(metadata: dict[str, str]) -> list[str] | None:
    """export.py's 'names' (a dict or list literal, read without evaluating code), if present and well formed."""
    try:
        names = ast.literal_eval(metadata["names"])
    except (KeyError, ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(names, dict):
        names = [names.get(i) for i in range(len(names))]
    return [str(n) for n in names] if isinstance(names, (list, tuple)) and None not in names else None


def _static_size(model: ov.Model, path: str, size: tuple[int, int] | None) -> ov.Model:
    """The model with a static [1, 3, H, W] input: as exported, or reshaped to --size (default 640) if dynamic."""
    if len(model.inputs) != 1:
        raise PruneyoloError(f"{path}: {len(model.inputs)} inputs; a YOLOv5 export has one image input")
    shape = model.input(0).get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or shape[1].is_dynamic or shape[1].get_length() != 3:
        raise PruneyoloError(f"{path}: input of shape {shape}; expected [1, 3, H, W] (RGB, NCHW)")
    if model.input(0).get_element_type() != ov.Type.f32:
        raise PruneyoloError(f"{path}: {model.input(0).get_element_type()} input; export without --half")
    if shape.is_static:
        height, width = shape[2].get_length(), shape[3].get_length()
        if size and size != (width, height):
            raise ArgumentError("size", f"{size[0]}x{size[1]}: {path} was exported at a fixed {width}x{height}; "
                                        "another size needs an export.py --dynamic export")
        return model
    width, height = size or DEFAULT_SIZE
    model.reshape({model.input(0): ov.PartialShape([1, 3, height, width])})
    return model


def _detections_only(model: ov.Model, path: str) -> ov.Model:
    """The model reduced to its first output, which must be [1, N, 5+C] float boxes."""
    output = model.outputs[0]
    shape = output.get_partial_shape()
    if shape.is_dynamic or len(shape) != 3 or shape[0].get_length() != 1 or shape[2].get_length() < 6 \
            or output.get_element_type() != ov.Type.f32:
        shapes = ", ".join(str(o.get_partial_shape()) for o in model.outputs)
        raise PruneyoloError(f"{path}: outputs {shapes}; pruneyolo wraps YOLOv5 export.py ONNX files, whose first "
                             "output is decoded boxes [1, N, 5+C] (export without --nms/--raw heads)")
    if len(model.outputs) == 1:
        return model
    return ov.Model([model.get_results()[0]], model.get_parameters(), model.get_friendly_name())


def _heads(rows: int, width: int, height: int, largest: str | None) -> list[HeadInfo]:
    """YOLOv5's levels (3 anchors per cell at strides 8, 16, ... up to export.py's 'stride', else 32 or 64) if
    they account for every row, else none; the anchors themselves are inside the exported graph."""
    for top in ([int(largest)] if largest and largest.isdigit() else LARGEST_STRIDES):
        strides = [8 * 2 ** level for level in range(max(0, top.bit_length() - 3))]
        grids = [[height // s, width // s] for s in strides]
        if strides and all(width % s == 0 and height % s == 0 for s in strides) and \
                rows == ANCHORS_PER_CELL * sum(h * w for h, w in grids):
            return [HeadInfo(s, [], "yolov5", YOLOV5_SCALE_X_Y, grid) for s, grid in zip(strides, grids, strict=True)]
    return []


def wrap_onnx(path, labels: list[str] | None = None, size: tuple[int, int] | None = None,
              storage: str = "fp32") -> ov.Model:
    """The ONNX as an IR with u8 NHWC BGR input named 'image', output 'detections' and pruneyolo metadata;
    `storage` is the weight storage its metadata names (fp32 or fp16: it is not quantized)."""
    path = str(path)
    storage = weight_storage(storage)
    if storage == "int8":
        raise PruneyoloError(f"{path}: int8 storage does not apply to an ONNX (quantize from the cfg or .pt instead)")
    if not Path(path).is_file():
        raise PruneyoloError(f"{path}: no such ONNX file")
    metadata = onnx_metadata(path)
    labels = labels or metadata_names(metadata)
    try:
        model = ov.Core().read_model(path)
    except RuntimeError as exc:
        raise PruneyoloError(f"{path}: OpenVINO cannot read the ONNX: {str(exc).strip().splitlines()[0]}") from None
    model = _detections_only(_static_size(model, path, size), path)
    _, rows, columns = (d.get_length() for d in model.output(0).get_partial_shape())
    _, _, height, width = (d.get_length() for d in model.input(0).get_partial_shape())
    classes = columns - 5
    labels = labels or [f"class_{i}" for i in range(classes)]
    if len(labels) != classes:
        raise PruneyoloError(f"{path}: {len(labels)} class names for an output of {classes} classes")
    model.inputs[0].get_tensor().set_names({"image"})
    model.outputs[0].get_tensor().set_names({"detections"})
    model = embed_preprocessing(model, 3)
    heads = _heads(rows, width, height, metadata.get("stride"))
    info = ModelInfo(labels, width, height, heads, "decoded", "yolov5", Path(path).name,
                     hashlib.sha256(Path(path).read_bytes()).hexdigest(), storage)
    info.write(model)
    return model
