"""Read a torch.save zip without torch.load: a restricted unpickler over data.pkl, storages read and bounded here.

torch.load is never called on a checkpoint: its legacy (pre-1.6) loader runs handlers that act on what the
file says (one writes a "reverse patch" file named by the file), so only the zip format is read, and by this
module. Before any object is built the pickle's opcodes are scanned (count, nesting); only a small allow-list
of globals resolves to real objects, each sealed so that pickle's BUILD cannot change it; every other class
becomes an inert StandIn subclass. Storages are read from the zip at most at their declared sizes, whose total
is capped against the file's size, and every tensor is a bounds-checked view of its storage whose element
count is capped too, so no file can make the reader allocate far more than the file holds.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from pathlib import PurePosixPath

import torch

from pruneyolo.errors import show
from pruneyolo.yolov5 import TAR_MAGIC, TAR_MAGIC_END

MAX_PICKLE_BYTES = 32 << 20  # data.pkl of a real YOLOv5x checkpoint is well under 1 MB (tensors are separate)
MAX_OPCODES = 4_000_000  # about 40 times a real checkpoint's
MAX_NESTING = 200  # objects inside objects; a real checkpoint nests about 30 deep
MAX_GLOBALS = 1000  # distinct classes and functions named; a real checkpoint names about 20
STORAGE_BYTES_PER_FILE_BYTE = 2  # storages stored deflated may expand this much; torch itself stores them raw
MAX_BROADCAST_ELEMENTS = 1 << 22  # a tensor with more elements than its storage (YOLOv5's cached grids) is smaller
MAX_DIMENSIONS = 8
MAX_EXTENT = 1 << 40  # any one dimension, stride, offset or storage size (keeps the arithmetic on them cheap)
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
RESAVE = "re-save it with a recent torch (torch.save(torch.load(f, weights_only=False), f)) where you trust it"


class ArchiveError(Exception):
    """A checkpoint this reader refuses; the message is one line without the path."""


class Refused(pickle.UnpicklingError):
    """Raised inside unpickling when the file asks for something no checkpoint needs; one line."""


class Sealed:
    """An allow-listed function or class, callable but closed: no __dict__, no attribute or state can be set."""

    __slots__ = ("_call", "_name")

    def __init__(self, name: str, call):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_call", call)

    def __call__(self, *args):
        return self._call(*args)

    def __setattr__(self, name, value):
        raise Refused(f"the file sets attribute {show(name)} on {self._name}")

    def __delattr__(self, name):
        raise Refused(f"the file deletes attribute {show(name)} of {self._name}")

    def __setstate__(self, state):
        raise Refused(f"the file sets the state of {self._name}")

    def __reduce__(self):
        raise TypeError(f"{self._name} is not picklable here")

    def __repr__(self) -> str:
        return self._name


class StorageType:
    """What a `torch.<Type>Storage` global resolves to: the dtype of the storage a persistent id names."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: torch.dtype):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name, value):
        raise Refused(f"the file sets attribute {show(name)} on torch.{self.name}")

    def __setstate__(self, state):
        raise Refused(f"the file sets the state of torch.{self.name}")


class Storage:
    """One storage of the archive: its dtype and its bytes as a flat tensor."""

    __slots__ = ("flat", "key")

    def __init__(self, key: str, flat: torch.Tensor):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "flat", flat)

    def __setattr__(self, name, value):
        raise Refused(f"the file sets attribute {show(name)} on a storage")

    def __setstate__(self, state):
        raise Refused("the file sets the state of a storage")


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


def _parameter(data, *unused):
    """A Parameter's data: no hooks, no extra state."""
    if not isinstance(data, torch.Tensor):
        raise Refused(f"a parameter holds a {type(data).__name__}")
    return data


def _from_type(function, new_type, args, state):
    """A tensor subclass rebuilt as the plain tensor `function` (itself resolved by the allow-list) makes."""
    if not isinstance(function, Sealed) or not isinstance(args, tuple):
        raise Refused("a tensor subclass rebuilt by something other than torch's tensor functions")
    return function(*args)


def _reconstructor(cls, base, state):
    """Protocol 0/1 object creation, for stand-in classes only."""
    if not (isinstance(cls, type) and issubclass(cls, StandIn)):
        raise Refused(f"copyreg._reconstructor of a {type(cls).__name__}")
    return cls.__new__(cls)


def _sealed(module: str, name: str, call) -> tuple[tuple[str, str], Sealed]:
    return (module, name), Sealed(f"{module}.{name}", call)


DTYPES = {("torch", name): value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
SEALED = dict([
    _sealed("collections", "OrderedDict", OrderedDict),
    *(_sealed(module, kind.__name__, kind) for module in ("builtins", "__builtin__") for kind in (set, frozenset)),
    _sealed("torch", "Size", torch.Size),
    _sealed("torch._utils", "_rebuild_parameter", _parameter),
    _sealed("torch._utils", "_rebuild_parameter_with_state", _parameter),
    _sealed("torch._tensor", "_rebuild_from_type_v2", _from_type),
    _sealed("copyreg", "_reconstructor", _reconstructor),
])
STORAGE_TYPES = {("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()}
TENSOR_BUILDERS = (("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"))


# --- the opcode scan ---------------------------------------------------------------------------------------

MUTATORS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _pop_to_mark(stack: list, marks: list[int]) -> list:
    if not marks:
        raise ArchiveError("data.pkl is damaged (an opcode without its mark)")
    start = marks.pop()
    items = stack[start:]
    del stack[start:]
    return items


def _pop(stack: list, count: int) -> list:
    if count > len(stack):
        raise ArchiveError("data.pkl is damaged (an opcode without its arguments)")
    items = stack[len(stack) - count:]
    del stack[len(stack) - count:]
    return items


def _step(op, arg, stack: list, marks: list[int], memo: dict) -> None:
    """Simulate one opcode on a stack of depth cells ([depth], shared by memo copies of the same object)."""
    if op.name == "MARK":
        marks.append(len(stack))
        return
    if op.name in MEMO_PUTS or op.name == "MEMOIZE":
        if not stack:
            raise ArchiveError("data.pkl is damaged (a memo store on an empty stack)")
        memo[arg if op.name in MEMO_PUTS else len(memo)] = stack[-1]
        return
    if op.name in MEMO_GETS:
        stack.append(memo.get(arg) or [0])
        return
    if op.name == "POP" and marks and marks[-1] == len(stack):
        marks.pop()  # as pickle does: POP right after MARK discards the mark
        return
    if op.name == "DUP":
        stack.append(stack[-1] if stack else [0])
        return
    before = op.stack_before
    if pickletools.markobject in before:
        popped = _pop_to_mark(stack, marks)
        popped = _pop(stack, before.index(pickletools.markobject)) + popped
    else:
        popped = _pop(stack, len(before))
    depth = 1 + max((cell[0] for cell in popped), default=-1)
    if op.name in MUTATORS:
        target = popped[0]
        target[0] = max(target[0], 1 + max((cell[0] for cell in popped[1:]), default=-1))
        depth = target[0]
        stack.append(target)
    else:
        stack.extend([depth] for _ in op.stack_after)
    if depth > MAX_NESTING:
        raise ArchiveError(f"objects nested more than {MAX_NESTING} deep, which no checkpoint needs (a hostile or "
                           "damaged file)")


def scan_pickle(data: bytes) -> None:
    """Refuse, before anything is built, a pickle with too many opcodes or objects nested too deeply."""
    stack: list[list[int]] = []
    marks: list[int] = []
    memo: dict = {}
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data), 1):
            if count > MAX_OPCODES:
                raise ArchiveError(f"data.pkl has more than {MAX_OPCODES} opcodes, far more than any YOLOv5 model")
            _step(op, arg, stack, marks, memo)
    except ValueError as exc:  # genops: an unknown opcode or truncated data
        raise ArchiveError(f"data.pkl is damaged ({exc})") from None


# --- the archive --------------------------------------------------------------------------------------------

class Archive:
    """A torch.save zip: its record folder, and bounded reads of data.pkl and the storages."""

    def __init__(self, archive: zipfile.ZipFile, size: int):
        self.zip, self.file_size = archive, size
        pickles = [name for name in archive.namelist() if PurePosixPath(name).name == "data.pkl"
                   and len(PurePosixPath(name).parts) == 2]
        if len(pickles) != 1:
            raise ArchiveError("a zip without one <folder>/data.pkl, so not a torch.save checkpoint")
        self.folder = PurePosixPath(pickles[0]).parts[0]
        names = set(archive.namelist())
        if f"{self.folder}/constants.pkl" in names or any(n.startswith(f"{self.folder}/code/") for n in names):
            raise ArchiveError("a TorchScript archive, not a checkpoint; give the .pt that train.py or the pruning "
                               "tool saved (or its ONNX export)")
        if self.read_small("byteorder", 16) not in (None, b"little"):
            raise ArchiveError(f"saved on a big-endian machine; {RESAVE} on a little-endian one")
        self.storage_bytes = 0

    def read_small(self, name: str, limit: int) -> bytes | None:
        """A record of the folder (None if absent), refused if larger than `limit` bytes once inflated."""
        path = f"{self.folder}/{name}"
        try:
            self.zip.getinfo(path)
        except KeyError:
            return None
        with self.zip.open(path) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ArchiveError(f"{path} is larger than {limit} bytes, far more than any YOLOv5 checkpoint's")
        return data

    def pickle(self) -> bytes:
        return self.read_small("data.pkl", MAX_PICKLE_BYTES)

    def storage(self, key: str, dtype: torch.dtype, count: int) -> torch.Tensor:
        """Storage `key` as a flat tensor of `count` elements; its bytes are read only if they fit the budget."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        size = count * itemsize
        self.storage_bytes += size
        budget = STORAGE_BYTES_PER_FILE_BYTE * self.file_size
        if self.storage_bytes > budget:
            raise Refused(f"storages declaring {self.storage_bytes} bytes in all from a {self.file_size}-byte "
                          "file (a hostile or damaged file)")
        path = f"{self.folder}/data/{key}"
        try:
            info = self.zip.getinfo(path)
        except KeyError:
            raise Refused(f"storage {key!r} is missing from the archive") from None
        if info.file_size != size:
            raise Refused(f"storage {key!r} holds {info.file_size} bytes, but the checkpoint declares {size}")
        with self.zip.open(info) as handle:
            data = bytearray(handle.read(size))
        if len(data) != size:
            raise Refused(f"storage {key!r} is truncated")
        return torch.frombuffer(data, dtype=dtype) if size else torch.empty((0,), dtype=dtype)


# --- the unpickler ------------------------------------------------------------------------------------------

def _ints(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, torch.Size)) or len(value) > MAX_DIMENSIONS \
            or not all(type(v) is int and 0 <= v <= MAX_EXTENT for v in value):
        raise Refused(f"a tensor whose {what} is not a short list of non-negative integers")
    return tuple(value)


class CheckpointUnpickler(pickle.Unpickler):
    """Resolves only the sealed allow-list, storage types and this archive's tensors; anything else a StandIn."""

    def __init__(self, archive: Archive, data: bytes):
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.storages: dict[str, Storage] = {}
        self.classes: dict[tuple[str, str], type] = {}
        self.elements = 0
        self.element_budget = STORAGE_BYTES_PER_FILE_BYTE * archive.file_size + MAX_BROADCAST_ELEMENTS
        tensor = Sealed("torch._utils._rebuild_tensor_v2", self.tensor)
        self.allowed = {**SEALED, **DTYPES, **STORAGE_TYPES, **{key: tensor for key in TENSOR_BUILDERS}}

    def find_class(self, module, name):
        key = (str(module), str(name))
        if key in self.allowed:
            return self.allowed[key]
        if key not in self.classes:
            if len(self.classes) >= MAX_GLOBALS:
                raise Refused(f"the file names more than {MAX_GLOBALS} classes, far more than any YOLOv5 model")
            self.classes[key] = stand_in_class(*key)
        return self.classes[key]

    def persistent_load(self, pid):
        """('storage', <Type>Storage, key, location, count): the storage, read once per key."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise Refused("a persistent id that is not a torch storage")
        _, kind, key, _, count = pid
        if not isinstance(kind, StorageType):
            what = kind.__name__ if isinstance(kind, type) else type(kind).__name__
            raise Refused(f"a storage of type {what}; YOLOv5 checkpoints hold "
                          f"{', '.join(STORAGE_DTYPES)} only")
        if not (isinstance(key, str) and key.isdigit() and len(key) < 20 and type(count) is int
                and 0 <= count <= MAX_EXTENT):
            raise Refused("a storage with a malformed key or size")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = Storage(key, self.archive.storage(key, kind.dtype, count))
        elif storage.flat.dtype != kind.dtype or storage.flat.numel() != count:
            raise Refused(f"storage {key!r} is declared twice with different types or sizes")
        return storage

    def tensor(self, storage, offset, size, stride, *unused):
        """torch's _rebuild_tensor_v2, bounds-checked: a view of `storage` with no hooks or metadata."""
        if not isinstance(storage, Storage):
            raise Refused(f"a tensor's storage is a {type(storage).__name__}")
        size, stride = _ints(size, "shape"), _ints(stride, "strides")
        if type(offset) is not int or not 0 <= offset <= MAX_EXTENT or len(size) != len(stride):
            raise Refused("a tensor with a malformed offset, shape or strides")
        elements, available = math.prod(size), storage.flat.numel()
        if elements == 0:
            return torch.empty(size, dtype=storage.flat.dtype)
        last = offset + sum((n - 1) * step for n, step in zip(size, stride, strict=True))
        if last >= available:
            raise Refused(f"a tensor of shape {size} reaches element {last} of storage {storage.key!r}, which "
                          f"holds {available}")
        if elements > available and elements > MAX_BROADCAST_ELEMENTS:
            raise Refused(f"a tensor of shape {size} ({elements} elements) views a storage of {available}; no "
                          "YOLOv5 checkpoint holds such a tensor")
        self.elements += elements
        if self.elements > self.element_budget:
            raise Refused(f"tensors of {self.elements} elements in all from a {self.archive.file_size}-byte file, "
                          "far more than it holds (a hostile or damaged file)")
        return torch.as_strided(storage.flat, size, stride, offset)


def refuse_other_formats(head: bytes) -> None:
    """One line for what is not a torch.save zip: torch's legacy pickle and tar formats, or no checkpoint."""
    if head[TAR_MAGIC_END - len(TAR_MAGIC):TAR_MAGIC_END] == TAR_MAGIC:
        raise ArchiveError(f"a checkpoint in torch's legacy tar format, which pruneyolo does not read; {RESAVE}")
    if head[:1] == b"\x80":
        raise ArchiveError(f"a checkpoint in torch's legacy (pre-1.6, non-zip) format, which pruneyolo does not "
                           f"read; {RESAVE}")
    raise ArchiveError("not a PyTorch checkpoint (not a torch.save zip)")


def read_archive(handle, size: int):
    """The object a torch.save zip holds, unpickled under the allow-list; every refusal is an ArchiveError or
    a Refused (one line); a damaged zip raises zipfile.BadZipFile."""
    with zipfile.ZipFile(handle) as archive:
        reader = Archive(archive, size)
        data = reader.pickle()
        if data is None:
            raise ArchiveError("a zip without data.pkl, so not a torch.save checkpoint")
        scan_pickle(data)
        return CheckpointUnpickler(reader, data).load()
