"""Model metadata stored in an IR's rt_info under `model_info`, so the runner needs nothing but the .xml (and
reads it without the cfg parser: a graph is only a type here)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from pruneyolo import __version__
from pruneyolo.detect import CONFIDENCE_THRESHOLD, IOU_THRESHOLD
from pruneyolo.detect.letterbox import PAD_VALUE
from pruneyolo.errors import PruneyoloError

if TYPE_CHECKING:
    from pruneyolo.darknet.graph import Graph

SECTION = "model_info"
MODEL_API_WRAPPERS = {"scores": "YOLOv5"}  # heads mode -> the model_api wrapper that parses its output


@dataclass
class HeadInfo:
    """One detection head: grid stride, anchors in input pixels, decode formula and its scale."""

    stride: int
    anchors: list[list[float]]
    decode: str  # 'darknet' | 'new_coords' | 'yolov5' | 'region'
    scale_x_y: float = 1.0
    grid: list[int] = field(default_factory=list)  # [h, w]


@dataclass
class ModelInfo:
    """Everything the runner, eval and bench need to interpret an IR's outputs."""

    labels: list[str]
    input_width: int
    input_height: int
    heads: list[HeadInfo]
    # 'decoded': one [1, N, 5+C] output; 'raw': one [1, A*(5+C), h, w] per head; 'scores': one [1, 4+C, N]
    heads_mode: str = "decoded"
    dialect: str = "darknet"
    cfg_name: str = ""
    cfg_sha256: str = ""
    storage: str = "fp32"  # weight storage: fp32, fp16 or int8 (export.precision.weight_storage)
    pruneyolo_version: str = __version__

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @classmethod
    def from_graph(cls, graph: Graph, labels: list[str] | None = None, heads_mode: str = "decoded",
                   storage: str = "fp32") -> ModelInfo:
        classes = graph.heads[0].classes if graph.heads else 0
        labels = labels or [f"class_{i}" for i in range(classes)]
        if len(labels) != classes:
            raise PruneyoloError(f"{len(labels)} labels given but the cfg has classes={classes}")
        width, height = graph.size
        heads = [HeadInfo(head.stride, head.pixel_anchors, head.decode, head.scale_x_y, list(head.out_shape[1:]))
                 for head in graph.heads]
        return cls(labels, width, height, heads, heads_mode, graph.dialect, graph.path.rsplit("/", 1)[-1],
                   graph.cfg_sha256, storage)

    def to_rt_info(self) -> dict[str, str]:
        """Flat string values: model_api's keys plus ours (`pruneyolo_*`, JSON where structured)."""
        anchors = [v for head in self.heads for pair in head.anchors for v in pair]
        masks, start = [], 0
        for head in self.heads:
            masks += list(range(start, start + len(head.anchors)))
            start += len(head.anchors)
        return {
            **self.model_api_keys(),
            "anchors": " ".join(f"{v:g}" for v in anchors),
            "masks": " ".join(str(m) for m in masks),
            "num_classes": str(self.num_classes),
            "strides": " ".join(str(head.stride) for head in self.heads),
            "scale_x_y": " ".join(f"{head.scale_x_y:g}" for head in self.heads),
            "new_coords": " ".join(str(int(head.decode == "new_coords")) for head in self.heads),
            "input_size": f"{self.input_width} {self.input_height}",
            "heads_mode": self.heads_mode,
            "pruneyolo": json.dumps(asdict(self), separators=(",", ":")),
        }

    def model_api_keys(self) -> dict[str, str]:
        """What model_api reads: its wrapper for our output (only where one parses it), the labels, and the
        pre-processing that letterboxes any BGR frame into the input as `pruneyolo run` does. The IR already
        swaps BGR to RGB and divides by 255, so model_api must do neither (its YOLOv5 defaults do both)."""
        wrapper = MODEL_API_WRAPPERS.get(self.heads_mode)
        return {
            **({"model_type": wrapper} if wrapper else {}),
            "labels": " ".join(label.replace(" ", "_") for label in self.labels),
            "resize_type": "fit_to_window_letterbox",
            "interpolation_mode": "LINEAR",
            "pad_value": str(PAD_VALUE),
            "reverse_input_channels": "False",
            "mean_values": "",
            "scale_values": "",
            "confidence_threshold": f"{CONFIDENCE_THRESHOLD:g}",
            "iou_threshold": f"{IOU_THRESHOLD:g}",
        }

    def write(self, model) -> None:
        """Store into an openvino.Model's rt_info."""
        for key, value in self.to_rt_info().items():
            model.set_rt_info(value, [SECTION, key])

    @classmethod
    def read(cls, model) -> ModelInfo:
        """Load from an openvino.Model (read_model or compiled model's runtime model)."""
        try:
            text = model.get_rt_info([SECTION, "pruneyolo"]).astype(str)
        except RuntimeError:
            raise PruneyoloError("the IR has no pruneyolo metadata (rt_info model_info/pruneyolo): convert it "
                                 "with `pruneyolo convert`") from None
        return cls.from_json(text)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Load from the JSON stored under `pruneyolo` (what `to_rt_info` writes there)."""
        data = json.loads(text)
        if "precision" in data:  # IRs written before the field was named for what it holds
            data["storage"] = data.pop("precision")
        data["heads"] = [HeadInfo(**head) for head in data["heads"]]
        return cls(**data)
