"""Read a PyTorch checkpoint without running any code from it: YOLOv5 module trees become inert records.

A .pt file is a pickle, and unpickling calls whatever the file names. torchzip reads the torch.save zip with
its own restricted unpickler (torch.load never sees the file): only a small sealed allow-list resolves to
real objects, every other class, from `models.common.Conv` to `os.system`, becomes a fresh subclass of
`StandIn`, which only stores its constructor arguments and pickled state, and tensors are bounds-checked
views of the archive's storages. The module tree is then walked once per object into frozen records.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pruneyolo.errors import PruneyoloError, show
from pruneyolo.yolov5 import ZIP_MAGIC
from pruneyolo.yolov5.torchzip import ArchiveError, Refused, StandIn, read_archive, refuse_other_formats

MAX_DEPTH = 64  # module nesting deeper than this is not a YOLOv5 model (and could exhaust the stack)
MAX_TREE = 100_000  # modules, shared ones counted where they appear; YOLOv5x has about 700
MAX_NAME = 100  # characters of a module or tensor name (YOLOv5's are like "model.24.m.0")
HEAD_BYTES = 512  # enough to tell a zip, a pickle and a tar apart


class CheckpointError(PruneyoloError):
    """A .pt file that cannot be read as a model checkpoint."""


# --- records ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModuleRecord:
    """One pickled nn.Module: class name, plain attributes, float32 tensors and child modules in order."""

    kind: str
    origin: str  # the pickled module path, for messages only (classes are identified by name)
    attrs: dict = field(repr=False)
    tensors: dict[str, np.ndarray] = field(repr=False)
    children: dict[str, ModuleRecord] = field(repr=False)

    def child(self, name: str) -> ModuleRecord | None:
        return self.children.get(name)


@dataclass(frozen=True)
class Checkpoint:
    """The model found in a checkpoint file."""

    path: str
    model: ModuleRecord
    sha256: str  # of the file's bytes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a numpy array; floating point (fp16 and bf16 included) as float32."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).contiguous().numpy().copy()


def _is_module(value) -> bool:
    return isinstance(value, StandIn) and isinstance(value.__dict__.get("_modules"), dict)


class Walk:
    """One walk over an unpickled model: every object converted once (memoised by id), cycles refused, and
    the tree, counted with each shared module at every place it appears, capped at MAX_TREE modules."""

    def __init__(self):
        self.records: dict[int, tuple[ModuleRecord, int]] = {}  # id -> (record, modules in its tree)
        self.values: dict[int, object] = {}
        self.open: set[int] = set()

    def plain(self, value, depth: int = 0):
        """An attribute value with nothing executable left: numbers, strings, containers, arrays, names."""
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return value
        if isinstance(value, type):
            return value.__name__
        if not isinstance(value, (torch.Tensor, tuple, list, set, frozenset, dict)):
            return type(value).__name__  # a stand-in record, dtype or storage: only its class name is kept
        if id(value) not in self.values:
            if depth > MAX_DEPTH:
                raise CheckpointError("attributes nested too deeply")
            if id(value) in self.open:
                raise CheckpointError("an attribute that contains itself")
            self.open.add(id(value))
            self.values[id(value)] = self._convert(value, depth)
            self.open.discard(id(value))
        return self.values[id(value)]

    def _convert(self, value, depth: int):
        if isinstance(value, torch.Tensor):
            return _array(value)
        if isinstance(value, tuple):  # torch.Size too
            return tuple(self.plain(v, depth + 1) for v in value)
        if isinstance(value, (list, set, frozenset)):
            return [self.plain(v, depth + 1) for v in value]
        return {k if isinstance(k, (int, str)) else show(k): self.plain(v, depth + 1)
                for k, v in value.items()}

    def record(self, module: StandIn, where: str, depth: int = 0) -> ModuleRecord:
        """The inert record of one pickled module and its children."""
        return self._tree(module, where, depth)[0]

    def _tree(self, module: StandIn, where: str, depth: int) -> tuple[ModuleRecord, int]:
        key = id(module)
        if key in self.records:
            return self.records[key]
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{where}: modules nested more than {MAX_DEPTH} deep")
        if key in self.open:
            raise CheckpointError(f"{where}: a module that contains itself")
        self.open.add(key)
        children, size = {}, 1
        for name, child in module.__dict__["_modules"].items():
            if child is None:
                continue
            if not _is_module(child):
                raise CheckpointError(f"{where}.{name}: a {type(child).__name__} where a module belongs")
            name = _name(name)
            children[name], count = self._tree(child, f"{where}.{name}", depth + 1)
            size += count
            if size > MAX_TREE:
                raise CheckpointError(f"{where}: more than {MAX_TREE} modules (shared ones counted where they "
                                      "appear), far more than any YOLOv5 model")
        state = module.__dict__
        attrs = {key: self.plain(value) for key, value in state.items()
                 if isinstance(key, str) and not key.startswith("_")}
        record = ModuleRecord(type(module).__name__, type(module).__module__, attrs, _tensors(state, where),
                              children)
        self.open.discard(key)
        self.records[key] = (record, size)
        return self.records[key]


def _name(key) -> str:
    """A module or tensor name from the file as text: names longer than a real one's, or not strings, shortened."""
    return key if isinstance(key, str) and len(key) <= MAX_NAME else show(key)


def _tensors(state: dict, where: str) -> dict[str, np.ndarray]:
    """A module's parameters and persistent buffers as arrays."""
    skip = state.get("_non_persistent_buffers_set") or set()
    if not isinstance(skip, (set, frozenset, list, tuple)):
        raise CheckpointError(f"{where}: _non_persistent_buffers_set is a {type(skip).__name__}, not a set")
    tensors = {}
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, dict):
            raise CheckpointError(f"{where}: {group} is a {type(entries).__name__}, not a dict")
        for name, value in entries.items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{where}.{name}: a {type(value).__name__} where a tensor belongs")
            tensors[_name(name)] = _array(value)
    return tensors


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def find_model(loaded, path: str) -> tuple[StandIn, str]:
    """The pickled model (YOLOv5's `ema` before `model`, as its own loader does) and where it was found."""
    if _is_module(loaded):
        return loaded, "the file"
    if isinstance(loaded, dict):
        for key in ("ema", "model"):
            if _is_module(loaded.get(key)):
                return loaded[key], f"'{key}'"
        if _is_state_dict(loaded) or any(_is_state_dict(loaded.get(k)) for k in ("model", "ema", "state_dict")):
            raise CheckpointError(
                f"{path}: holds only a state_dict (tensor names and values), not the model object; pruneyolo needs "
                "the pickled model, as YOLOv5's train.py and the pruning tools save it ({'model': model})")
        keys = ", ".join(show(k) for k in list(loaded)[:8])
        raise CheckpointError(f"{path}: no model object under 'model' or 'ema' (keys: {keys or 'none'}); "
                              "is this a YOLOv5 checkpoint?")
    raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a YOLOv5 checkpoint")


def _read(data: bytes, path: str):
    """The object a checkpoint file's bytes hold; every refusal is one CheckpointError line."""
    try:
        if data[:4] != ZIP_MAGIC:
            refuse_other_formats(data[:HEAD_BYTES])
        return read_archive(io.BytesIO(data), len(data))
    except (ArchiveError, Refused) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, EOFError):
        raise CheckpointError(f"{path}: a damaged zip (truncated download or copy?); give the .pt that train.py "
                              "or the pruning tool saved") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or hostile file may fail anywhere in unpickling
        raise CheckpointError(f"{path}: cannot read it as a PyTorch checkpoint: {_first_line(exc)}") from None


def load_checkpoint(path) -> Checkpoint:
    """Load a checkpoint safely and return its model as records; every failure is one CheckpointError line. The
    file is read once: its bytes are parsed and hashed in memory."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {exc.strerror}") from None
    loaded = _read(data, path)
    model, where = find_model(loaded, path)
    try:
        record = Walk().record(model, type(model).__name__)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: the model under {where}: {exc}") from None
    return Checkpoint(path, record, hashlib.sha256(data).hexdigest())

