"""The Python face of pruneyolo: `load` a model file, then summarise, codegen, convert or prune it; `run` an IR.

Every command of the CLI is a shell over the same calls; errors are `PruneyoloError`s (one line), and a bad
argument is an `ArgumentError` naming the parameter as these functions spell it (`layer_keep`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from pruneyolo import modelfile
from pruneyolo.darknet.cfg import format_cfg
from pruneyolo.darknet.graph import Graph
from pruneyolo.darknet.summary import format_summary, summary_data
from pruneyolo.darknet.weights import DarknetWeights, write_weights
from pruneyolo.detect import CONFIDENCE_THRESHOLD, IOU_THRESHOLD
from pruneyolo.detect.interface import read_interface
from pruneyolo.errors import ArgumentError, PruneyoloError
from pruneyolo.files import atomic_write

__all__ = ["Model", "load", "run"]


class Model:
    """A loaded model file. A cfg or YOLOv5 checkpoint has a `graph` (and `weights`, None for a cfg loaded without
    them); an ONNX or an IR has none: they only `convert` (ONNX) or `run` (IR)."""

    def __init__(self, path, kind: str, graph: Graph | None = None, weights: DarknetWeights | None = None,
                 names: list[str] | None = None):
        self.path, self.kind, self.graph, self.weights, self.names = Path(path), kind, graph, weights, names

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, {self.kind})"

    def _needs_graph(self, action: str) -> Graph:
        if self.graph is None:
            raise PruneyoloError(f"{self.path}: {modelfile.KINDS[self.kind]} has no graph to {action}; load the cfg "
                                 "or checkpoint it came from")
        return self.graph

    def _needs_weights(self, action: str) -> DarknetWeights:
        if self.weights is None:
            raise ArgumentError("weights", f"missing: {action} {self.path} needs them (load(cfg, weights=...))")
        return self.weights

    def summary(self, as_json: bool = False) -> str | dict:
        """Darknet's start-up listing of the graph (`as_json`: the same facts as data); for an IR its tensors and
        metadata."""
        if self.kind == "ir":
            interface = read_interface(self.path)
            if as_json:
                return {"inputs": [spec.describe() for spec in interface.inputs],
                        "outputs": [spec.describe() for spec in interface.outputs],
                        "metadata": interface.info.to_rt_info()}
            return "\n".join([f"{self.path}: OpenVINO IR", *(f"input  {spec.describe()}" for spec in interface.inputs),
                              *(f"output {spec.describe()}" for spec in interface.outputs)])
        graph = self._needs_graph("summarise")
        return summary_data(graph) if as_json else format_summary(graph)

    def codegen(self, output=None) -> str:
        """The standalone PyTorch file's text, also written to `output` if given (its weights beside it as
        <output stem>.weights when the model has weights)."""
        from pruneyolo.nn.codegen import render_model

        graph = self._needs_graph("generate code from")
        weights_path = None
        if output is not None and self.weights is not None:
            weights_path = Path(output).with_suffix(".weights")
            write_weights(weights_path, graph, self.weights)
        text = render_model(graph, str(weights_path.resolve()) if weights_path else None)
        if output is not None:
            atomic_write(output, text)
        return text

    def convert(self, output_dir=None, *, storage: str = "fp32", heads: str = "decoded", labels: list[str] | None
                = None, calib=None, calib_size: int = 300, onnx_dir=None, ovms_dir=None, ovms_device: str | None = None,
                stem: str | None = None) -> list[Path]:
        """Write the model as each export target given a place: an OpenVINO IR (u8 NHWC BGR input, metadata
        embedded) into `output_dir`, an ONNX into `onnx_dir`, the next version in the model server repository
        `ovms_dir`; int8 storage quantizes on `calib` (a folder of images, or 'synthetic'). The paths written."""
        from pruneyolo.export.build import IrOptions, build_ir
        from pruneyolo.export.precision import weight_storage
        from pruneyolo.export.quantize import calibration
        from pruneyolo.export.targets import Exported, check_request, write_targets

        storage = weight_storage(storage)
        places = {name: Path(place) for name, place in (("ir", output_dir), ("onnx", onnx_dir), ("ovms", ovms_dir))
                  if place is not None}
        if not places:
            raise ArgumentError("output_dir", "give a place to write: output_dir, onnx_dir or ovms_dir")
        check_request(list(places), self.kind, storage, heads, ["ovms_device"] if ovms_device else [])
        stem = stem or self.path.stem
        options = {"ovms_device": ovms_device}
        if self.kind == "onnx":
            from pruneyolo.export.onnx_wrap import wrap_onnx

            return write_targets(Exported(stem, wrap_onnx(self.path, labels, None, storage), storage, heads,
                                          options=options), places)
        graph = self._needs_graph("convert")
        ir_options = IrOptions(heads, labels or self.names, storage, calibration(calib, calib_size) if calib else None)
        built = build_ir(graph, self._needs_weights("converting"), ir_options)
        return write_targets(Exported(stem, built.model, storage, heads, built.module, graph, options), places)

    def prune(self, percent: float, *, layer_keep: float | None = None, shortcuts: int = 0, fold: bool = True,
              round_to: int = 1) -> Model:
        """The model pruned: `shortcuts` residual blocks removed, then channels at the global |gamma| `percent`
        (each layer keeping at least `layer_keep` of its channels if given), counts rounded up to `round_to`."""
        from pruneyolo.prune.pruning import output_stem, prune

        graph = self._needs_graph("prune")
        result = prune(graph, self._needs_weights("pruning"), percent, layer_keep, shortcuts, fold, round_to)
        stem = output_stem(str(self.path), percent, shortcuts)
        return Model(self.path.with_name(f"{stem}.cfg"), "cfg", result.graph, result.weights, self.names)

    def save(self, directory) -> tuple[Path, Path]:
        """Write the model as <stem>.cfg and <stem>.weights into `directory` (atomically); their paths."""
        graph = self._needs_graph("save")
        cfg, weights = Path(directory) / f"{self.path.stem}.cfg", Path(directory) / f"{self.path.stem}.weights"
        atomic_write(cfg, format_cfg(list(graph.sections)))
        write_weights(weights, graph, self._needs_weights("saving"))
        return cfg, weights


def load(path, weights=None, *, size: tuple[int, int] | None = None, dialect: str | None = None) -> Model:
    """A model file as `pruneyolo.modelfile` recognises it: a Darknet cfg (with `weights`, a .weights path, for
    anything but summary and codegen), a YOLOv5 checkpoint, a YOLOv5 export.py ONNX or an OpenVINO IR; `size`
    (width, height) overrides a cfg's or sets a checkpoint's input size."""
    kind = modelfile.model_kind(path)
    if kind in modelfile.GRAPH_KINDS:
        graph, darknet_weights, names = modelfile.load_model(path, weights, size, dialect, need_weights=False)
        return Model(path, kind, graph, darknet_weights, names)
    for argument, value in (("weights", weights), ("size", size), ("dialect", dialect)):
        if value is not None and not (kind == "onnx" and argument == "size"):
            raise ArgumentError(argument, f"does not apply to {modelfile.KINDS[kind]} ({path})")
    if kind == "ir":
        read_interface(path)  # one line now for an .xml that is not a pruneyolo IR
    elif not Path(path).is_file():
        raise PruneyoloError(f"{path}: no such file")
    return Model(path, kind)


def run(model, sources: list[str], *, layout: str | None = None, device: str = "CPU",
        conf: float = CONFIDENCE_THRESHOLD, iou: float = IOU_THRESHOLD, nireq: int | None = None,
        hint: str = "throughput", precision: str | None = None, loop: bool = False, reconnect: bool = False,
        max_frames: int | None = None, duration: float | None = None, jsonl=None,
        stop: threading.Event | None = None) -> dict:
    """Run an IR (a path or a loaded Model) in process on `sources` (as `pruneyolo run --source` takes them) tiled
    into mosaics, until they end, `max_frames`/`duration` is reached or `stop` is set; the final metrics."""
    from pruneyolo.detect.mosaic import make_layout
    from pruneyolo.runner.adapter import Adapter
    from pruneyolo.runner.outputs import JsonlSink
    from pruneyolo.runner.pipeline import Pipeline, RunOptions
    from pruneyolo.runner.sources import CapturePolicy, parse_source

    xml = model.path if isinstance(model, Model) else Path(model)
    if modelfile.model_kind(xml) != "ir":
        raise ArgumentError("model", f"{xml}: {modelfile.KINDS[modelfile.model_kind(xml)]}; run takes an OpenVINO "
                                     "IR (.xml): convert it first")
    if not sources:
        raise ArgumentError("sources", "is empty: give at least one source")
    specs = [parse_source(source) for source in sources]
    with Adapter(xml, device, hint, precision, nireq) as adapter:
        sinks = [JsonlSink(jsonl, adapter.info.labels)] if jsonl else []
        grid = make_layout(layout, len(specs), *adapter.input_size)
        pipeline = Pipeline(adapter, specs, CapturePolicy(loop=loop, reconnect=reconnect, max_frames=max_frames),
                            grid, sinks, RunOptions(conf=conf, iou=iou, duration=duration))
        return pipeline.run(stop or threading.Event())
