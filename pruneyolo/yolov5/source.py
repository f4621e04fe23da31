"""One way in for every command: a Darknet cfg with --weights, or a YOLOv5 checkpoint in place of both."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pruneyolo.darknet.cfg import parse_cfg_text
from pruneyolo.darknet.graph import Graph, build_graph, load_graph
from pruneyolo.darknet.weights import DarknetWeights, read_weights, weights_bytes
from pruneyolo.errors import PruneyoloError
from pruneyolo.files import atomic_write
from pruneyolo.yolov5 import PICKLE_PROTOCOL_OPCODE, TAR_MAGIC, TAR_MAGIC_END, ZIP_MAGIC

CHECKPOINT_SUFFIXES = (".pt", ".pth")


class LoadedModel(NamedTuple):
    """A model as the commands use it; `names` are the checkpoint's class names (None for a cfg)."""

    graph: Graph
    weights: DarknetWeights | None
    names: list[str] | None


def is_checkpoint(path) -> bool:
    """A .pt/.pth file, or any file that starts like a torch.save zip, a pickle or a tar (a cfg is text); the
    loader refuses all but the zip in one line."""
    path = Path(path)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(TAR_MAGIC_END)
    except OSError:
        return False
    return head[:4] == ZIP_MAGIC or head[:1] == bytes([PICKLE_PROTOCOL_OPCODE]) \
        or head[TAR_MAGIC_END - len(TAR_MAGIC):] == TAR_MAGIC


def import_checkpoint(path, size: tuple[int, int] | None = None):
    """A checkpoint read safely and mapped to Darknet form: (graph typed from the emitted cfg text, Imported)."""
    from pruneyolo.yolov5.checkpoint import CheckpointError, load_checkpoint
    from pruneyolo.yolov5.mapping import DEFAULT_SIZE, LayerError, to_darknet

    path = str(path)
    checkpoint = load_checkpoint(path)
    try:
        imported = to_darknet(checkpoint.model, size or DEFAULT_SIZE, Path(path).name)
    except LayerError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    graph = build_graph(parse_cfg_text(imported.cfg_text, path), path, dialect=imported.dialect)
    found = tuple(head.stride for head in graph.heads)
    if found != imported.strides:
        raise CheckpointError(f"{path}: the Detect strides {imported.strides} do not match the imported heads' "
                              f"{found}")
    return graph, imported


def load_model(path, weights=None, size: tuple[int, int] | None = None, dialect: str | None = None, *,
               need_weights: bool = True) -> LoadedModel:
    """CFG + --weights, or a YOLOv5 checkpoint alone (default size 640x640); every problem is one line."""
    if is_checkpoint(path):
        if weights:
            raise PruneyoloError(f"{path}: a checkpoint carries its own weights; drop --weights {weights}")
        if dialect:
            raise PruneyoloError(f"{path}: --dialect applies to cfg files; a checkpoint's form is chosen on import")
        graph, imported = import_checkpoint(path, size)
        return LoadedModel(graph, imported.weights, imported.names)
    graph = load_graph(path, size, dialect)
    if weights:
        return LoadedModel(graph, read_weights(weights, graph), None)
    if need_weights:
        raise PruneyoloError(f"{path}: a cfg needs --weights W (or give a YOLOv5 .pt checkpoint in its place)")
    return LoadedModel(graph, None, None)


def import_paths(path, directory) -> tuple[Path, Path, Path]:
    """DIR/<stem>.cfg, .weights and .names for a checkpoint."""
    stem = Path(directory) / Path(path).stem
    return stem.with_name(stem.name + ".cfg"), stem.with_name(stem.name + ".weights"), \
        stem.with_name(stem.name + ".names")


def write_import(path, directory, size: tuple[int, int] | None = None) -> LoadedModel:
    """Write a checkpoint's <stem>.cfg/.weights/.names into `directory` (all checked first, each atomically);
    returns the model with the graph of the written cfg."""
    graph, imported = import_checkpoint(path, size)
    data = weights_bytes(graph, imported.weights)
    cfg_path, weights_path, names_path = import_paths(path, directory)
    if Path(path).resolve() in {p.resolve() for p in (cfg_path, weights_path, names_path)}:
        raise PruneyoloError(f"{path}: writing into {directory} would overwrite the checkpoint itself")
    atomic_write(cfg_path, imported.cfg_text)
    atomic_write(weights_path, data)
    atomic_write(names_path, "".join(f"{name}\n" for name in imported.names))
    return LoadedModel(load_graph(cfg_path), imported.weights, imported.names)


def load_for_training(path, weights, size: tuple[int, int] | None, out_dir) -> LoadedModel:
    """load_model for `train`; a checkpoint is first imported into `out_dir`, so the <stem>.weights training
    writes there sits beside its <stem>.cfg and .names."""
    if not is_checkpoint(path):
        return load_model(path, weights, size, need_weights=False)
    if weights:
        raise PruneyoloError(f"{path}: a checkpoint carries its own weights; drop --weights {weights}")
    if (Path(out_dir) / f"{Path(path).stem}.pt").resolve() == Path(path).resolve():
        raise PruneyoloError(f"{path}: training writes <stem>.pt into {out_dir}, which would overwrite the "
                             "checkpoint; choose another -o")
    return write_import(path, out_dir, size)
