"""Graph + weights -> OpenVINO IR (u8 NHWC BGR input, pre-processing and metadata embedded) and ONNX."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import openvino as ov
import torch
from openvino.preprocess import ColorFormat, PrePostProcessor
from torch import nn

from pruneyolo.darknet.graph import Graph
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.detect import HEADS_MODES
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.opset_compat import downgrade_for_2022
from pruneyolo.nn.build import DecodedModel, ScoresModel, build_model


class RawHeads(nn.Module):
    """A DarknetModel returning its head tensors as a tuple (one IR output each)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return tuple(self.model(x))


def export_module(graph: Graph, weights: DarknetWeights | None, heads: str = "decoded") -> nn.Module:
    """The torch module convert exports: raw heads, or heads decoded in-graph into one tensor of rows (decoded)
    or of per-class scores (scores)."""
    if heads not in HEADS_MODES:
        raise PruneyoloError(f"heads {heads!r}: use one of {', '.join(HEADS_MODES)}")
    if not graph.heads:
        raise PruneyoloError(f"{graph.path}: no [yolo] or [region] layer, so nothing to detect with")
    model = build_model(graph, weights)
    if heads == "raw":
        return RawHeads(model).eval()
    decoded = DecodedModel(model, graph)
    return (ScoresModel(decoded) if heads == "scores" else decoded).eval()


def output_names(graph: Graph, heads: str) -> list[str]:
    return [f"head{i}" for i in range(len(graph.heads))] if heads == "raw" else ["detections"]


def embed_preprocessing(model: ov.Model, channels: int) -> ov.Model:
    """u8 NHWC BGR frames in; f32 NCHW RGB / 255 to the network (colour swap only for 3 channels)."""
    ppp = PrePostProcessor(model)
    tensor = ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    if channels == 3:
        tensor.set_color_format(ColorFormat.BGR)
        steps.convert_color(ColorFormat.RGB)
    steps.scale(255.0)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


def module_to_openvino(module: nn.Module, graph: Graph, heads: str = "decoded", labels: list[str] | None = None,
                       storage: str = "fp32") -> ov.Model:
    """An export_module converted: pre-processing embedded, 2022.3-loadable ops, metadata set (naming `storage`,
    the weight storage the IR will be written in: fp32, fp16 or int8, as export.precision.weight_storage names it)."""
    info = ModelInfo.from_graph(graph, labels, heads, storage)
    channels, height, width = graph.input_shape
    example = torch.zeros(1, channels, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)  # the check re-traces: 3x slower
        model = ov.convert_model(traced, example_input=example, input=[(1, channels, height, width)])
    for output, name in zip(model.outputs, output_names(graph, heads), strict=True):
        output.get_tensor().set_names({name})
    model.inputs[0].get_tensor().set_names({"image"})
    model = embed_preprocessing(model, channels)
    downgrade_for_2022(model)
    info.write(model)
    return model


@contextmanager
def _staging(directory: Path):
    """A temporary folder inside `directory`, removed afterwards whatever happens."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pruneyolo-", dir=directory))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_ir(model: ov.Model, xml_path: Path, storage: str = "fp32") -> Path:
    """Write .xml/.bin atomically (staged, then renamed; .bin first so a visible .xml always has its .bin), float
    weights compressed for fp16 storage (an int8 IR's float ops, the decode, stay fp32)."""
    compress = storage == "fp16"
    xml_path = Path(xml_path)
    with _staging(xml_path.parent) as staging:
        staged = staging / xml_path.name
        ov.save_model(model, staged, compress_to_fp16=compress)
        os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(staged, xml_path)
    return xml_path


def save_onnx(module: nn.Module, graph: Graph, path: Path, heads: str) -> Path:
    """Export the float NCHW RGB module to ONNX (opset 13), atomically."""
    path = Path(path)
    channels, height, width = graph.input_shape
    with _staging(path.parent) as staging, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        staged = staging / path.name
        torch.onnx.export(module, (torch.zeros(1, channels, height, width),), str(staged), dynamo=False,
                          input_names=["image"], output_names=output_names(graph, heads), opset_version=13)
        os.replace(staged, path)
    return path


def read_names(path) -> list[str]:
    """Darknet .names: one label per non-empty line."""
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise PruneyoloError(f"{path}: cannot read the class names: {exc.strerror}") from None
