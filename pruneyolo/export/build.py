"""One way to build an IR: graph + weights -> converted IR (its metadata naming the weight storage) -> int8
quantized on an explicit calibration source; export/targets.py writes it (IR files, ONNX, a model server
repository).

`convert`, `bench`, `prune --target-*` and the tests all build through `build_ir`; `convert` of a YOLOv5 ONNX
wraps it instead (export/onnx_wrap.py) and writes it through the same targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import openvino as ov
from torch import nn

from pruneyolo.darknet.graph import Graph
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.convert import export_module, module_to_openvino
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


def build_ir(graph: Graph, weights: DarknetWeights | None, options: IrOptions = IrOptions()) -> BuiltIr:
    """The IR `options` ask for, in memory: converted once from the module, quantized when the storage is int8."""
    module = export_module(graph, weights, options.heads)
    float_model = module_to_openvino(module, graph, options.heads, options.labels, options.storage)
    model = quantize(float_model, options.calibration) if options.calibration else float_model
    return BuiltIr(model, float_model, module)
