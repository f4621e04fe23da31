"""The one place that recognises a model file: a path's kind, and the loader every command takes it in by.

Kinds: a Darknet cfg (with --weights), a YOLOv5 checkpoint (weights included), a YOLOv5 export.py ONNX and an
OpenVINO IR. The cfg and the checkpoint load here into a graph with weights; the ONNX and the IR have no graph,
so the commands that take them (`convert`, `eval`, `run`) ask `model_kind` and use their own readers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pruneyolo.errors import ArgumentError, CfgError, PruneyoloError
from pruneyolo.yolov5 import PICKLE_PROTOCOL_OPCODE, TAR_MAGIC, TAR_MAGIC_END, ZIP_MAGIC

if TYPE_CHECKING:  # the cfg parser loads on first use: `run` checks an IR with require_ir alone
    from pruneyolo.darknet.graph import Graph
    from pruneyolo.darknet.weights import DarknetWeights

KINDS = {"cfg": "a Darknet cfg", "checkpoint": "a YOLOv5 checkpoint", "onnx": "an ONNX file",
         "ir": "an OpenVINO IR"}
SUFFIXES = {".pt": "checkpoint", ".pth": "checkpoint", ".onnx": "onnx", ".xml": "ir"}
GRAPH_KINDS = ("cfg", "checkpoint")
RANDOM = "random"  # --weights random[:SEED]: seeded random weights instead of a file


class LoadedModel(NamedTuple):
    """A model as the commands use it; `names` are the checkpoint's class names (None for a cfg)."""

    graph: Graph
    weights: DarknetWeights | None
    names: list[str] | None


def imported_model(graph: Graph, imported) -> LoadedModel:
    """A checkpoint's graph and its yolov5.mapping.Imported as a LoadedModel."""
    return LoadedModel(graph, imported.weights, imported.names)


def starts_like_a_checkpoint(path: Path) -> bool:
    """The file starts like a torch.save zip, a pickle or a tar (a cfg is text); the checkpoint loader refuses all
    but the zip in one line."""
    try:
        with path.open("rb") as handle:
            head = handle.read(TAR_MAGIC_END)
    except OSError:
        return False
    return head[:4] == ZIP_MAGIC or head[:1] == bytes([PICKLE_PROTOCOL_OPCODE]) \
        or head[TAR_MAGIC_END - len(TAR_MAGIC):] == TAR_MAGIC


def model_kind(path) -> str:
    """'checkpoint' (.pt/.pth, or a file that starts like one), 'onnx' (.onnx), 'ir' (.xml), else 'cfg'."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind:
        return kind
    return "checkpoint" if starts_like_a_checkpoint(path) else "cfg"


def require_kind(path, *kinds: str) -> str:
    """The path's kind, which must be one of `kinds`; else one line saying what was given and what is taken."""
    kind = model_kind(path)
    if kind not in kinds:
        wanted = " or ".join(KINDS[k] for k in kinds)
        raise PruneyoloError(f"{path}: {KINDS[kind]}; this command takes {wanted}")
    return kind


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF")
HEAD = 4096  # bytes read to tell a file's kind: an IR .xml holds its <net> element in them


def read_head(path: Path, count: int) -> bytes:
    """The file's first `count` bytes (empty if it cannot be read)."""
    try:
        with path.open("rb") as handle:
            return handle.read(count)
    except OSError:
        return b""


def require_ir(path, *, need_bin: bool = True) -> None:
    """An OpenVINO IR .xml (with its .bin beside it unless `need_bin` is False), checked before OpenVINO sees it;
    anything else is one line saying what the file is and what to do."""
    path = Path(path)
    if not path.is_file():
        raise PruneyoloError(f"{path}: no such file; give the .xml that `pruneyolo convert` wrote")
    if path.suffix.lower() != ".xml":
        raise PruneyoloError(f"{path}: {what_it_is(path)}")
    if b"<net" not in read_head(path, HEAD):
        raise PruneyoloError(f"{path}: not an OpenVINO IR (no <net> element); give the .xml that `pruneyolo "
                             "convert` wrote")
    if need_bin and not path.with_suffix(".bin").is_file():
        raise PruneyoloError(f"{path}: its weights {path.with_suffix('.bin')} are missing; `pruneyolo convert` "
                             "writes both: keep the .bin beside the .xml")


def what_it_is(path: Path) -> str:
    """What a file that is not an IR .xml holds, and how to get an IR (or a run) from it."""
    suffix, head = path.suffix.lower(), read_head(path, HEAD)
    if suffix == ".bin":
        xml = path.with_suffix(".xml")
        return f"the weights half of an OpenVINO IR: give its .xml ({xml}{'' if xml.is_file() else ', missing'})"
    if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES or head.startswith(IMAGE_MAGIC):
        return "an image or video, not a model: give it as --source and the model's IR .xml as MODEL"
    if suffix == ".weights":
        return (f"Darknet weights, not an IR: convert them with their cfg first (`pruneyolo convert CFG --weights "
                f"{path} -o DIR`), then run DIR/<cfg stem>.xml")
    kind = model_kind(path)
    if kind == "cfg" and not looks_like_cfg(head):
        return "not a model file pruneyolo knows: give an OpenVINO IR .xml (`pruneyolo convert` writes one)"
    weights = path.with_suffix(".weights")
    given = f" --weights {weights if weights.is_file() else 'W.weights'}" if kind == "cfg" else ""
    return (f"{KINDS[kind]}, not an IR: convert it first (`pruneyolo convert {path}{given} -o DIR`), then run "
            f"DIR/{path.stem}.xml")


def looks_like_cfg(head: bytes) -> bool:
    """The text starts (after blank lines and comments) with a [section] header."""
    for line in head.decode("utf-8", "replace").lstrip("\ufeff").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            return line.startswith("[")
    return False


def random_seed(weights) -> int | None:
    """The seed of a `random` or `random:SEED` weights argument; None for a weights path."""
    text = str(weights)
    if weights is None or not (text == RANDOM or text.startswith(f"{RANDOM}:")):
        return None
    if text != RANDOM and not (text[len(RANDOM) + 1:].isascii() and text[len(RANDOM) + 1:].isdigit()):
        raise ArgumentError("weights", f"{weights}: give random or random:SEED (a whole number); a weights file "
                                       f"named so: ./{weights}")
    return int(text[len(RANDOM) + 1:]) if text != RANDOM else 0


def load_model(path, weights=None, size: tuple[int, int] | None = None, dialect: str | None = None, *,
               need_weights: bool = True, random_ok: bool = False) -> LoadedModel:
    """CFG + weights, or a YOLOv5 checkpoint alone (default size 640x640); every problem is one line. With
    `random_ok`, weights `random[:SEED]` are seeded random weights (marked so), for timing an untrained cfg."""
    seed = random_seed(weights)
    if seed is not None and not random_ok:
        raise ArgumentError("weights", f"{weights}: random weights are for timing an untrained cfg: only "
                                       "`convert`, `bench` and `prune --target-fps/--target-ms/--target-like` take them")
    if require_kind(path, *GRAPH_KINDS) == "checkpoint":
        from pruneyolo.yolov5.source import import_checkpoint

        refuse_weights(path, weights)
        if dialect:
            raise ArgumentError("dialect", f"applies to cfg files; {path} is a checkpoint, whose form is chosen on import")
        return imported_model(*import_checkpoint(path, size))
    graph = load_sized_graph(path, size, dialect)
    if seed is not None:
        from pruneyolo.darknet.weights import random_weights

        return LoadedModel(graph, dataclasses.replace(random_weights(graph, seed), random_seed=seed), None)
    if weights:
        from pruneyolo.darknet.weights import read_weights

        return LoadedModel(graph, read_weights(weights, graph), None)
    if need_weights:
        raise ArgumentError("weights", f"missing: {path} is a cfg, which needs them (or give a YOLOv5 .pt checkpoint in "
                                       "its place)")
    return LoadedModel(graph, None, None)


def load_sized_graph(path, size: tuple[int, int] | None, dialect: str | None) -> Graph:
    """load_graph at `size`; a cfg that builds at its own [net] size but not at `size` blames `size`, saying
    which sizes the model takes."""
    from pruneyolo.darknet.graph import load_graph

    try:
        return load_graph(path, size, dialect)
    except CfgError as exc:
        if size is None:
            raise
        try:
            own = load_graph(path, None, dialect)
        except PruneyoloError:
            raise exc from None
        stride = max(stride_needed(own), 1)
        fitting = [f"{w}x{h}" for w, h in sizes_near(size, stride) if builds(path, (w, h), dialect)]
        takes = f"multiples of {stride} (e.g. {' or '.join(fitting)})" if fitting else "its [net] size"
        raise ArgumentError("size", f"{size[0]}x{size[1]}: {path} takes {takes}; its [net] has {own.size[0]}x"
                                    f"{own.size[1]}; at {size[0]}x{size[1]}: {exc.message}") from None


def stride_needed(graph: Graph) -> int:
    """The largest factor by which any layer downsamples the input (global pooling aside): sizes that are
    multiples of it keep every route and shortcut's inputs the same size."""
    _, height, width = graph.input_shape
    return max((max(round(height / node.out_shape[1]), round(width / node.out_shape[2])) for node in graph.nodes
                if node.out_shape[1] > 1 or node.out_shape[2] > 1), default=1)


def sizes_near(size: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """The multiples of `stride` just below and just above `size` (below only when it is not zero)."""
    below = tuple(max(stride, value // stride * stride) for value in size)
    above = tuple(-(-value // stride) * stride for value in size)
    return list(dict.fromkeys((below, above)))


def builds(path, size: tuple[int, int], dialect: str | None) -> bool:
    """The cfg builds at `size`."""
    from pruneyolo.darknet.graph import load_graph

    try:
        load_graph(path, size, dialect)
    except PruneyoloError:
        return False
    return True


def refuse_weights(path, weights) -> None:
    """A checkpoint carries its own weights: a weights file beside it is an error."""
    if weights:
        raise ArgumentError("weights", f"{weights}: {path} is a checkpoint, which carries its own weights; drop them")


def load_for_training(path, weights, size: tuple[int, int] | None, out_dir) -> LoadedModel:
    """load_model for `train`; a checkpoint is first imported into `out_dir`, so the <stem>.weights training
    writes there sits beside its <stem>.cfg and .names."""
    if require_kind(path, *GRAPH_KINDS) == "cfg":
        return load_model(path, weights, size, need_weights=False)
    from pruneyolo.yolov5.source import write_import

    refuse_weights(path, weights)
    if (Path(out_dir) / f"{Path(path).stem}.pt").resolve() == Path(path).resolve():
        raise ArgumentError("out_dir", f"{out_dir}: training writes <stem>.pt there, which would overwrite the "
                                       f"checkpoint {path}; choose another")
    return imported_model(*write_import(path, out_dir, size))
