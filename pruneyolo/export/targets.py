"""What `convert` can write: one table of export targets (what each writes, which inputs, weight storages and
heads it takes, where the model metadata goes, its own options and its writer), which both checks a request and
writes it. Adding a target is one `ExportTarget` in TARGETS.

A writer gets the `Exported` model and a directory and returns the paths it wrote, each written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pruneyolo.detect import HEADS_MODES
from pruneyolo.errors import ArgumentError
from pruneyolo.export.precision import STORAGE
from pruneyolo.modelfile import GRAPH_KINDS, KINDS

if TYPE_CHECKING:
    import openvino as ov
    from torch import nn

    from pruneyolo.darknet.graph import Graph

STORAGES = tuple(STORAGE.values())
ONNX_INPUT = {"onnx": (("fp32", "fp16"), ("decoded",))}  # a YOLOv5 ONNX: wrapped as exported, never quantized


@dataclass(frozen=True)
class Exported:
    """A converted model as the writers take it: the IR in memory, and where it came from a graph, the torch
    module and graph it was converted from; its weight storage, heads mode, and the targets' own options."""

    stem: str
    model: ov.Model
    storage: str = "fp32"
    heads: str = "decoded"
    module: nn.Module | None = None
    graph: Graph | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExportTarget:
    """One format: what it writes, per input kind the (storages, heads) it takes, where the metadata goes, the
    options only it uses, and its writer `write(exported, directory) -> paths written`."""

    name: str
    writes: str
    inputs: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    metadata: str
    write: Callable[[Exported, Path], list[Path]]
    options: tuple[str, ...] = ()


def _write_ir(exported: Exported, directory: Path) -> list[Path]:
    from pruneyolo.export.convert import save_ir

    return [save_ir(exported.model, Path(directory) / f"{exported.stem}.xml", exported.storage)]


def _write_onnx(exported: Exported, directory: Path) -> list[Path]:
    from pruneyolo.export.convert import save_onnx

    return [save_onnx(exported.module, exported.graph, Path(directory) / f"{exported.stem}.onnx", exported.heads)]


def _write_ovms(exported: Exported, directory: Path) -> list[Path]:
    from pruneyolo.export.ovms import model_name, write_repository

    return list(write_repository(exported.model, directory, model_name(exported.stem),
                                 exported.options.get("ovms_device"), exported.storage))


def _from_graph(storages=STORAGES, heads=HEADS_MODES) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    return dict.fromkeys(GRAPH_KINDS, (storages, heads))


TARGETS: dict[str, ExportTarget] = {
    "ir": ExportTarget("ir", "<stem>.xml/.bin", {**_from_graph(), **ONNX_INPUT}, "the IR's rt_info (model_info)",
                       _write_ir),
    "onnx": ExportTarget("onnx", "<stem>.onnx (float weights, NCHW RGB input)", _from_graph(),
                         "none: tensor names only", _write_onnx),
    "ovms": ExportTarget("ovms", "an OVMS repository: <name>/<next version>/model.xml/.bin + config.json",
                         {**_from_graph(), **ONNX_INPUT}, "the IR's rt_info; config.json names the model",
                         _write_ovms, ("ovms_device",)),
}


def check_request(formats: list[str], kind: str, storage: str, heads: str, given: list[str] = ()) -> None:
    """One line for the first thing a target in `formats` does not take: the input kind, the weight storage,
    the heads mode, or an option (`given`: the options chosen) that none of them uses."""
    for name in formats:
        target = TARGETS[name]
        if kind not in target.inputs:
            raise ArgumentError("format", f"{name} does not apply to {KINDS[kind]} (it takes "
                                          f"{' or '.join(KINDS[k] for k in target.inputs)})")
        storages, heads_modes = target.inputs[kind]
        if storage not in storages:
            raise ArgumentError("storage", f"{storage} does not apply to format {name} from {KINDS[kind]} (it "
                                           f"takes {', '.join(storages)})")
        if heads not in heads_modes:
            raise ArgumentError("heads", f"{heads} does not apply to format {name} from {KINDS[kind]} (it takes "
                                         f"{', '.join(heads_modes)})")
    used = {option for name in formats for option in TARGETS[name].options}
    for option in given:
        if option not in used:
            owners = [name for name, target in TARGETS.items() if option in target.options]
            raise ArgumentError(option, f"is only used by format {' or '.join(owners)}; write that format too")


def write_targets(exported: Exported, destinations: dict[str, Path]) -> list[Path]:
    """Write `exported` as each target in `destinations` (name -> directory), in the table's order."""
    return [path for name, target in TARGETS.items() if name in destinations
            for path in target.write(exported, destinations[name])]
