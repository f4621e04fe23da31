"""An IR's interface read from its .xml alone (no .bin, no OpenVINO): input and output tensors and the metadata,
so a client that sends frames to a model server needs only the .xml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from pruneyolo.detect.metadata import SECTION, ModelInfo
from pruneyolo.errors import PruneyoloError

# OpenVINO element types (IR `element_type` / port `precision`) -> KServe v2 datatypes
DATATYPES = {"u8": "UINT8", "i8": "INT8", "u16": "UINT16", "i16": "INT16", "u32": "UINT32", "i32": "INT32",
             "u64": "UINT64", "i64": "INT64", "f16": "FP16", "f32": "FP32", "f64": "FP64", "bf16": "BF16",
             "boolean": "BOOL", "fp16": "FP16", "fp32": "FP32", "fp64": "FP64", "bool": "BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: its tensor names (the first is its usual name), shape and KServe datatype."""

    names: tuple[str, ...]
    shape: tuple[int, ...]
    datatype: str

    @property
    def name(self) -> str:
        return self.names[0]

    def describe(self) -> str:
        return f"{self.name} {self.datatype} [{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Interface:
    """What a client needs of an IR: its tensors, in the order OpenVINO gives them, and its metadata."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    info: ModelInfo


def _port_names(port: ElementTree.Element) -> tuple[str, ...]:
    """A port's tensor names (IR `names`: comma-separated, a literal comma escaped as '\\,')."""
    text = port.get("names", "").replace("\\,", "\0")
    return tuple(name.replace("\0", ",") for name in text.split(",") if name)


def _port_shape(port: ElementTree.Element) -> tuple[int, ...]:
    return tuple(int(dim.text) if dim.text.strip().lstrip("-").isdigit() else -1 for dim in port.findall("dim"))


def _datatype(precision: str) -> str:
    return DATATYPES.get(precision.lower(), precision.upper())


def _layer_id(layer: ElementTree.Element) -> int:
    return int(layer.get("id"))


def read_interface(xml: str | Path) -> Interface:
    """Parse an IR .xml: its Parameters (by layer id, as OpenVINO orders them), its Results (likewise, each
    named by the tensor that feeds it) and the pruneyolo metadata in its rt_info."""
    try:
        root = ElementTree.parse(xml).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise PruneyoloError(f"{xml}: not a readable OpenVINO IR .xml ({exc}); give the model's .xml") from None
    layers = sorted(root.iter("layer"), key=_layer_id)
    by_id = {layer.get("id"): layer for layer in layers}
    sources = {(edge.get("to-layer"), edge.get("to-port")): (edge.get("from-layer"), edge.get("from-port"))
               for edge in root.iter("edge")}
    inputs = []
    for layer in (layer for layer in layers if layer.get("type") == "Parameter"):
        port = layer.find("output/port")
        inputs.append(TensorSpec(_port_names(port) or (layer.get("name"),), _port_shape(port),
                                 _datatype(layer.find("data").get("element_type"))))
    outputs = []
    for layer in (layer for layer in layers if layer.get("type") == "Result"):
        port = layer.find("input/port")
        from_layer, from_port = sources[(layer.get("id"), port.get("id"))]
        feeding = next(p for p in by_id[from_layer].iterfind("output/port") if p.get("id") == from_port)
        names = _port_names(feeding) or (layer.get("name"),)
        outputs.append(TensorSpec(names, _port_shape(port), _datatype(port.get("precision", "f32"))))
    metadata = root.find(f"rt_info/{SECTION}/pruneyolo")
    if metadata is None:
        raise PruneyoloError(f"{xml}: the IR has no pruneyolo metadata (rt_info {SECTION}/pruneyolo): convert it "
                             "with `pruneyolo convert`")
    return Interface(tuple(inputs), tuple(outputs), ModelInfo.from_json(metadata.get("value")))
