"""One way to build an IR: graph + weights -> converted IR (its metadata naming the weight storage) -> int8
quantized on an explicit calibration source -> written to a folder and/or a model server repository.

`convert`, `bench` and `prune --target-*` all build through `build_ir`; `convert` of a YOLOv5 ONNX wraps it
instead (export/onnx_wrap.py) and writes it through the same `write_ir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import openvino as ov
from torch import nn

from pruneyolo.darknet.graph import Graph
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.convert import export_module, module_to_openvino, save_ir
from pruneyolo.export.precision import weight_storage
from pruneyolo.export.quantize import Calibration, quantize


@dataclass(frozen=True)
class IrOptions:
    """What IR to build: its heads layout, class labels (None: the model's own, else class_<i>), the weight
    storage written, and for int8 storage where the calibration inputs come from (required there, else refused)."""

    heads: str = "decoded"
    labels: list[str] | None = None
    storage: str = "fp32"
    calibration: Calibration | None = None

    def __post_init__(self):
        object.__setattr__(self, "storage", weight_storage(self.storage))
        if self.storage == "int8" and self.calibration is None:
            raise PruneyoloError("int8 storage needs a calibration source (images or synthetic scenes)")
        if self.storage != "int8" and self.calibration is not None:
            raise PruneyoloError(f"a calibration source is only used with int8 storage, not {self.storage}")


class BuiltIr(NamedTuple):
    """An IR in memory as it is written, the float IR it was quantized from (itself unless int8), and the torch
    module both came from."""

    model: ov.Model
    float_model: ov.Model
    module: nn.Module


def build_ir(graph: Graph, weights: DarknetWeights | None, options: IrOptions) -> BuiltIr:
    """The IR `options` ask for, in memory: converted once from the module, quantized when the storage is int8."""
    module = export_module(graph, weights, options.heads)
    float_model = module_to_openvino(module, graph, options.heads, options.labels, options.storage,
                                     weights.random_seed if weights else None)
    model = quantize(float_model, options.calibration) if options.calibration else float_model
    return BuiltIr(model, float_model, module)


def write_ir(model: ov.Model, storage: str, stem: str, output_dir=None, ovms_dir=None,
             ovms_device: str | None = None) -> list[Path]:
    """Save an IR as `output_dir`/<stem>.xml|bin and/or as the next version in the OVMS repository `ovms_dir`
    (`ovms_device`: its target_device, None to let OVMS pick), float weights stored as `storage` (int8 IRs keep
    their float ops, the decode, in fp32); the paths written."""
    from pruneyolo.export.ovms import model_name, write_repository

    if not output_dir and not ovms_dir:
        raise PruneyoloError("an IR needs somewhere to go: an output directory or a model server repository")
    written = [save_ir(model, Path(output_dir) / f"{stem}.xml", storage)] if output_dir else []
    if ovms_dir:
        written += write_repository(model, ovms_dir, model_name(stem), ovms_device, storage)
    return written
