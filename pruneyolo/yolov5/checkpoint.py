"""Read a PyTorch checkpoint without running any code from it: YOLOv5 module trees become inert records.

A .pt file is a pickle, and unpickling calls whatever the file names. Here only a small allow-list resolves
to real objects (OrderedDict, set, torch.Size, dtypes, and tensor rebuilding that ignores hooks and state);
every other class, from `models.common.Conv` to `os.system`, becomes a fresh subclass of `StandIn`, which
only stores its constructor arguments and pickled state. torch.load still reads the storages, so tensors
come out real (on the CPU whatever device they were saved from).
"""

from __future__ import annotations

import pickle
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from pruneyolo.errors import PruneyoloError
from pruneyolo.yolov5 import PICKLE_PROTOCOL_OPCODE, ZIP_MAGIC

MAX_DEPTH = 64  # module nesting deeper than this is not a YOLOv5 model (and could exhaust the stack)


class CheckpointError(PruneyoloError):
    """A .pt file that cannot be read as a model checkpoint."""


class StandIn:
    """An inert record of an object of a class that is not imported: its call arguments and pickled state."""

    def __new__(cls, *args, **kwargs):
        record = object.__new__(cls)
        record.__dict__["_standin_args"] = args
        return record

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (__dict__, __slots__ values)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_standin_state"] = state


def stand_in_class(module: str, name: str) -> type:
    """A new StandIn subclass carrying the pickled class's name (and module, for messages only)."""
    return type(str(name), (StandIn,), {"__module__": str(module), "__qualname__": str(name)})


def _tensor(storage, offset, size, stride, *unused):
    """torch's _rebuild_tensor_v2 without backward hooks, metadata or requires_grad."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"a tensor's storage is a {type(storage).__name__}")
    empty = torch.empty((0,), dtype=storage.dtype, device=storage._untyped_storage.device)
    return empty.set_(storage._untyped_storage, offset, size, stride)


def _parameter(data, *unused):
    """A Parameter's data: no hooks, no extra state."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter holds a {type(data).__name__}")
    return data


def _from_type(function, new_type, args, state):
    """A tensor subclass rebuilt as the plain tensor `function` (itself resolved by the allow-list) makes."""
    return function(*args)


def _reconstructor(cls, base, state):
    """Protocol 0/1 object creation, for stand-in classes only."""
    if not (isinstance(cls, type) and issubclass(cls, StandIn)):
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r}")
    return cls.__new__(cls)


DTYPE_NAMES = frozenset(name for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype))
ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor"): _tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _from_type,
    ("copyreg", "_reconstructor"): _reconstructor,
    **{("torch", name): getattr(torch, name) for name in DTYPE_NAMES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED globals; any other global becomes a StandIn subclass of the same name."""

    def find_class(self, module, name):
        allowed = ALLOWED.get((module, name))
        return allowed if allowed is not None else stand_in_class(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load subclasses `pickle_module.Unpickler` (adding storage handling) and calls `pickle_module.load`
# for the small headers of the legacy format: both go through the restricted unpickler.
RESTRICTED_PICKLE = types.ModuleType("pruneyolo_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a numpy array; floating point (fp16 and bf16 included) as float32."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).contiguous().numpy().copy()


def _is_module(value) -> bool:
    return isinstance(value, StandIn) and isinstance(value.__dict__.get("_modules"), dict)


def _plain(value, depth: int = 0):
    """An attribute value with nothing executable left: numbers, strings, containers, arrays, names."""
    if depth > MAX_DEPTH:
        raise CheckpointError("attributes nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, torch.Tensor):
        return _array(value)
    if isinstance(value, (torch.Size, tuple)):
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, (list, set, frozenset)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, (int, str)) else repr(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, type):
        return value.__name__
    return type(value).__name__  # a stand-in record, dtype or storage: only its class name is kept


def _record(module: StandIn, where: str, depth: int = 0) -> ModuleRecord:
    """The inert record of one pickled module and its children."""
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{where}: modules nested more than {MAX_DEPTH} deep")
    state = module.__dict__
    skip = state.get("_non_persistent_buffers_set") or ()
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
            tensors[str(name)] = _array(value)
    children = {}
    for name, child in state["_modules"].items():
        if child is None:
            continue
        if not _is_module(child):
            raise CheckpointError(f"{where}.{name}: a {type(child).__name__} where a module belongs")
        children[str(name)] = _record(child, f"{where}.{name}", depth + 1)
    attrs = {key: _plain(value) for key, value in state.items() if isinstance(key, str) and not key.startswith("_")}
    return ModuleRecord(type(module).__name__, type(module).__module__, attrs, tensors, children)


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
        keys = ", ".join(repr(k) for k in list(loaded)[:8])
        raise CheckpointError(f"{path}: no model object under 'model' or 'ema' (keys: {keys or 'none'}); "
                              "is this a YOLOv5 checkpoint?")
    raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a YOLOv5 checkpoint")


def _zip_problem(path: str) -> str:
    """Why a file that starts like a zip is not a readable torch.save archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "a damaged zip (truncated download or copy?)"
    if not any(name.endswith("data.pkl") for name in names):
        return "a zip without data.pkl, so not a torch.save checkpoint"
    return "a zip that torch cannot read"


def _refuse_torchscript(handle, path: str) -> None:
    """Refuse unreadable zips, and TorchScript archives (torch.load would hand them to torch.jit.load)."""
    try:
        with torch.serialization._open_zipfile_reader(handle) as archive:
            scripted = torch.serialization._is_torchscript_zip(archive)
    except Exception:  # noqa: BLE001 - any reader failure is a broken file
        raise CheckpointError(f"{path}: {_zip_problem(path)}; give the .pt that train.py or the pruning tool "
                              "saved") from None
    handle.seek(0)
    if scripted:
        raise CheckpointError(f"{path}: a TorchScript archive, not a checkpoint; give the .pt that train.py or "
                              "the pruning tool saved (or its ONNX export)")


def load_checkpoint(path) -> Checkpoint:
    """Load a checkpoint safely and return its model as records; every failure is one CheckpointError line."""
    path = str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; torch.load takes the open file
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {exc.strerror}") from None
    with handle:
        head = handle.read(4)
        handle.seek(0)
        if head == ZIP_MAGIC:
            _refuse_torchscript(handle, path)
        elif not head or head[0] != PICKLE_PROTOCOL_OPCODE:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip nor a pickle)")
        try:
            loaded = torch.load(handle, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE)
        except Exception as exc:  # noqa: BLE001 - a corrupt or hostile file may fail anywhere in unpickling
            raise CheckpointError(f"{path}: cannot read it as a PyTorch checkpoint: {_first_line(exc)}") from None
    model, where = find_model(loaded, path)
    try:
        record = _record(model, type(model).__name__)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: the model under {where}: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the model under {where} is nested too deeply") from None
    return Checkpoint(path, record)

