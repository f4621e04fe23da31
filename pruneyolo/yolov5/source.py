"""A YOLOv5 or YOLOv8 / YOLO11 checkpoint imported into Darknet form: in memory (a typed graph and weights) or as cfg, weights, names."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import Graph, build_graph, load_graph
from pruneyolo.darknet.weights import weights_bytes
from pruneyolo.errors import PruneyoloError
from pruneyolo.files import atomic_write

if TYPE_CHECKING:
    from pruneyolo.yolov5.mapping import Imported


def import_checkpoint(path, size: tuple[int, int] | None = None) -> tuple[Graph, Imported]:
    """A checkpoint read safely and mapped to Darknet form: (graph typed from the emitted cfg text, Imported)."""
    from pruneyolo.yolov5 import mapping, yolov8
    from pruneyolo.yolov5.checkpoint import CheckpointError, load_checkpoint

    path = str(path)
    checkpoint = load_checkpoint(path)
    convert = yolov8.to_darknet if yolov8.is_anchor_free(checkpoint.model) else mapping.to_darknet
    try:
        imported = convert(checkpoint.model, size or mapping.DEFAULT_SIZE, Path(path).name)
    except mapping.LayerError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    graph = replace(build_graph(parse_cfg_text(imported.cfg_text, path), path, dialect=imported.dialect),
                    source_sha256=checkpoint.sha256)
    found = tuple(head.stride for head in graph.heads)
    if found != imported.strides:
        raise CheckpointError(f"{path}: the Detect strides {imported.strides} do not match the imported heads' "
                              f"{found}")
    return graph, imported


def import_paths(path, directory) -> tuple[Path, Path, Path]:
    """DIR/<stem>.cfg, .weights and .names for a checkpoint."""
    stem = Path(directory) / Path(path).stem
    return stem.with_name(stem.name + ".cfg"), stem.with_name(stem.name + ".weights"), \
        stem.with_name(stem.name + ".names")


def write_import(path, directory, size: tuple[int, int] | None = None) -> tuple[Graph, Imported]:
    """Write a checkpoint's <stem>.cfg/.weights/.names into `directory` (all checked first, each atomically);
    returns (graph of the written cfg, Imported)."""
    graph, imported = import_checkpoint(path, size)
    data = weights_bytes(graph, imported.weights)
    cfg_path, weights_path, names_path = import_paths(path, directory)
    if Path(path).resolve() in {p.resolve() for p in (cfg_path, weights_path, names_path)}:
        raise PruneyoloError(f"{path}: writing into {directory} would overwrite the checkpoint itself")
    atomic_write(cfg_path, imported.cfg_text)
    atomic_write(weights_path, data)
    atomic_write(names_path, "".join(f"{name}\n" for name in imported.names))
    return load_graph(cfg_path), imported
