"""Checkpoints an attacker would craft, each refused by `pruneyolo import` in one line (tests and measurement).

`HOSTILE` maps a name to (builder, words its one-line error must contain); a builder writes the file into a
directory and returns its path. Sizes are kept small for the tests (the refusals do not depend on them);
`python tests/hostile_checkpoints.py DIR --full` writes the full-size files the issue measured.
"""

from __future__ import annotations

import pickle
import pickletools
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import yolov5_support as y5
from torch import nn

FULL = "--full" in sys.argv


def text(value: str) -> bytes:
    """BINUNICODE `value`."""
    data = value.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def atom(value) -> bytes:
    """The opcodes pushing an int, float, bool, None or tuple of those (no memo)."""
    return pickletools.optimize(pickle.dumps(value, protocol=2))[2:-1]


def storage(key: str, count: int, kind: str = "FloatStorage") -> bytes:
    """BINPERSID ('storage', torch.<kind>, key, 'cpu', count)."""
    return b"(" + text("storage") + f"ctorch\n{kind}\n".encode() + text(key) + text("cpu") + atom(count) + b"tQ"


def tensor(storage_ops: bytes, offset: int, size: tuple, stride: tuple) -> bytes:
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage_ops + atom(offset) + atom(tuple(size))
            + atom(tuple(stride)) + b"\x89ccollections\nOrderedDict\n)Rt" + b"R")


def one_entry(value_ops: bytes) -> bytes:
    """A protocol-2 pickle of {'model': value}."""
    return b"\x80\x02}" + text("model") + value_ops + b"s."


def zip_checkpoint(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A torch.save-style zip (torch.load reads it): data.pkl, byteorder, version and `records`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")  # torch.load (the old reader) needs it
        for name, data in (records or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


# --- the builders -------------------------------------------------------------------------------------------

def dag(directory: Path) -> Path:
    """A module tree where every level holds the one below twice: 2**60 modules reachable, 60 objects."""
    block = nn.ReLU()
    for _ in range(60):
        block = nn.Sequential(block, block)
    root = y5.v6_layout(np.random.default_rng(1))
    root.model[2].add_module("shared", block)
    path = directory / "dag.pt"
    torch.save({"model": root}, path)
    return path


def nested_tuple(directory: Path) -> Path:
    """A dict whose key is a tuple nested a million deep: hashing it overflows the C stack."""
    depth = 1_000_000 if FULL else 200_000
    return zip_checkpoint(directory / "nested.pt", b"\x80\x02}N" + b"\x85" * depth + b"Ns.")


def nested_lists(directory: Path) -> Path:
    """Lists nested 50,000 deep by APPEND (no marks): walking them recursively overflows."""
    depth = 50_000
    return zip_checkpoint(directory / "lists.pt", one_entry(b"]" * depth + b"a" * (depth - 1)))


def _v5_model():
    return y5.randomize(y5.v5_layout(np.random.default_rng(1)), 1)


def _save_model(path: Path, model) -> Path:
    torch.save({"model": model}, path)
    return path


def zero_stride(directory: Path) -> Path:
    """A Detect buffer viewing a one-element storage as 600 million elements (stride 0)."""
    model = _v5_model()
    model.model[-1].register_buffer("grid", torch.zeros(1).expand(600_000_000))
    return _save_model(directory / "zero_stride.pt", model)


def four_terabytes(directory: Path) -> Path:
    """A Detect buffer viewing a one-element storage as 10**12 float32 elements (4 TB)."""
    model = _v5_model()
    model.model[-1].register_buffer("grid", torch.zeros(1).expand(10**6, 10**6))
    return _save_model(directory / "4tb.pt", model)


def out_of_bounds(directory: Path) -> Path:
    """A view reaching past the end of its storage (torch would read other memory)."""
    return zip_checkpoint(directory / "oob.pt", one_entry(tensor(storage("0", 4), 2, (4,), (1,))),
                          {"data/0": bytes(16)})


def many_views(directory: Path) -> Path:
    """200 Detect buffers, each a full view of one 1M-float storage: 800 MB of arrays from a 4 MB file."""
    model, shared = _v5_model(), torch.zeros(1 << 20)
    for index in range(200):
        model.model[-1].register_buffer(f"view{index}", shared[:])
    return _save_model(directory / "views.pt", model)


MARKER = 123457  # the element count of a buffer whose declared size is then rewritten


def deflate_bomb(directory: Path) -> Path:
    """A real checkpoint, re-zipped, whose Detect buffer declares 2.3 GB (64 MB in the tests) stored as a
    deflated run of zeros (a 1.2 MB file at full size)."""
    count = 600_000_000 if FULL else 16 << 20
    model = _v5_model()
    model.model[-1].register_buffer("grid", torch.zeros(MARKER))
    saved = _save_model(directory / "saved.pt", model)
    marker, declared = b"J" + MARKER.to_bytes(4, "little"), b"J" + count.to_bytes(4, "little")
    path = directory / "bomb.pt"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w") as archive:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert data.count(marker) == 2  # the storage's count and the tensor's shape
                archive.writestr(info.filename, data.replace(marker, declared))
            elif info.file_size == 4 * MARKER:
                _write_zeros(archive, info.filename, 4 * count)
            else:
                archive.writestr(info.filename, data)
    saved.unlink()
    return path


def _write_zeros(archive: zipfile.ZipFile, name: str, size: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = bytes(1 << 20)
    with archive.open(info, "w", force_zip64=True) as handle:
        for start in range(0, size, len(chunk)):
            handle.write(chunk[: min(len(chunk), size - start)])


def pickle_bomb(directory: Path) -> Path:
    """data.pkl itself a deflated 64 MB (a huge BINBYTES of zeros)."""
    size = 64 << 20
    head = b"\x80\x02}" + text("model") + b"B" + size.to_bytes(4, "little")
    path = directory / "pickle_bomb.pt"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("archive/data.pkl")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as handle:
            handle.write(head)
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                handle.write(chunk)
            handle.write(b"s.")
    return path


def _tar_header(name: bytes, kind: bytes, size: int, extra: dict[int, bytes] | None = None) -> bytes:
    """One GNU tar header block (fields at their POSIX/GNU offsets)."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136], block[136:148] = b"%011o\0" % size, b"00000000000\0"
    block[156:157], block[257:265] = kind, b"ustar  \0"
    for offset, value in (extra or {}).items():
        block[offset:offset + len(value)] = value
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def sparse_tar(directory: Path) -> Path:
    """torch's legacy tar format: a first member whose name starts with the pickle opcode 0x80 (so the old
    format check passed it on to torch), then 'storages' as a GNU sparse member of 1.3 GB in 1.5 KB."""
    real = 1300 << 20
    sparse = {386: b"%011o\0" % (real - 1) + b"%011o\0" % 1, 483: b"%011o\0" % real}
    data = (_tar_header(b"\x80", b"0", 0) + _tar_header(b"storages", b"S", 512, sparse) + bytes(512)
            + bytes(1024))
    path = directory / "sparse_tar.pt"
    path.write_bytes(data)
    return path


def storage_of(kind: str):
    """A checkpoint holding a tensor of storage type `kind` (crafted: torch writes some of them otherwise)."""
    def build(directory: Path) -> Path:
        return zip_checkpoint(directory / f"{kind}.pt", one_entry(tensor(storage("0", 2, kind), 0, (2,), (1,))),
                              {"data/0": bytes(16)})
    return build


def saved_dtype(dtype: torch.dtype):
    """A checkpoint holding a tensor of `dtype`, saved by torch itself."""
    def build(directory: Path) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # experimental or deprecated dtypes
            value = (torch.quantize_per_tensor(torch.zeros(2), 0.1, 0, dtype) if dtype == torch.qint8
                     else torch.zeros(2, dtype=dtype))
        path = directory / f"{str(dtype).replace('torch.', '')}.pt"
        torch.save({"model": value}, path)
        return path
    return build


def _model(change, name: str, layout=y5.v5_layout):
    """A real (stand-in) YOLOv5 model with one attribute changed by `change(model)` before saving."""
    def build(directory: Path) -> Path:
        model = y5.randomize(layout(np.random.default_rng(1)), 1)
        change(model)
        path = directory / f"{name}.pt"
        torch.save({"model": model}, path)
        return path
    return build


def _strides(model, values):
    model.stride = model.model[-1].stride = torch.tensor(values)


def _set(path: str, value):
    def change(model):
        *owners, attribute = path.split(".")
        target = model
        for owner in owners:
            target = target[int(owner)] if owner.isdigit() else getattr(target, owner)
        object.__setattr__(target, attribute, value) if attribute.startswith("_") else setattr(target, attribute,
                                                                                              value)
    return change


def _buffer(path: str, value):
    def change(model):
        *owners, attribute = path.split(".")
        target = model
        for owner in owners:
            target = target[int(owner)] if owner.isdigit() else getattr(target, owner)
        target._buffers[attribute] = value
    return change


def _parameter(path: str, value):
    def change(model):
        *owners, attribute = path.split(".")
        target = model
        for owner in owners:
            target = target[int(owner)] if owner.isdigit() else getattr(target, owner)
        target._parameters[attribute] = nn.Parameter(value, requires_grad=False)
    return change


def _module(path: str, key, value):
    """Put `value` into the `_modules` of the module at `path` under `key` (any pickled key, not only a str)."""
    def change(model):
        target = model
        for owner in path.split("."):
            target = target[int(owner)] if owner.isdigit() else getattr(target, owner)
        target._modules[key] = value
    return change


def _repeat_bottleneck(model) -> None:
    """One Bottleneck object 3000 times in a C3 (pickled once): 9000 darknet layers from a small file."""
    block = model.model[2].m[0]
    model.model[2].m = nn.Sequential(*([block] * 3000))


def huge_shape(directory: Path) -> Path:
    """A tensor whose shape holds a 166-digit integer (the product alone would be costly to compute)."""
    return zip_checkpoint(directory / "huge_shape.pt", one_entry(tensor(storage("0", 4), 0, (10**50, 10**50),
                                                                        (1, 1))), {"data/0": bytes(16)})


FORGED = "Conv\n\x1b[2J\x1b[Herror: everything is fine"


def forged_class(directory: Path) -> Path:
    """A layer whose class name holds a newline and ANSI escapes (clear screen, fake line)."""
    forged = type(FORGED, (nn.Module,), {"__module__": __name__})
    setattr(sys.modules[__name__], FORGED, forged)
    try:
        model = y5.ModelPruned([(-1, y5.Conv(3, 4, 3, 2)), (-1, forged()),
                                ([1], y5.Detect(1, y5.ANCHORS[:1], [4], [2]))], ["a"])
        path = directory / "forged.pt"
        torch.save({"model": model}, path, pickle_protocol=4)
    finally:
        delattr(sys.modules[__name__], FORGED)
    return path


HOSTILE = {
    "dag": (dag, "more than 100000 modules"),
    "nested-tuple": (nested_tuple, "nested more than 200 deep"),
    "nested-lists": (nested_lists, "nested more than 200 deep"),
    "zero-stride": (zero_stride, "a tensor of shape (600000000,) (600000000 elements) views a storage of 1;"),
    "4tb-view": (four_terabytes, "views a storage of 1;"),
    "out-of-bounds": (out_of_bounds, "reaches element 5 of storage '0', which holds 4"),
    "many-views": (many_views, "far more than it holds"),
    "deflate-bomb": (deflate_bomb, "storages declaring"),
    "pickle-bomb": (pickle_bomb, "data.pkl is larger than"),
    "sparse-tar": (sparse_tar, "legacy tar format"),
    "complex32": (saved_dtype(torch.complex32), "a storage of type UntypedStorage"),
    "float8": (saved_dtype(torch.float8_e4m3fn), "a storage of type UntypedStorage"),
    "qint8": (saved_dtype(torch.qint8), "a storage of type QInt8Storage"),
    "complex-half-storage": (storage_of("ComplexHalfStorage"), "a storage of type ComplexHalfStorage"),
    "detect-stride-0": (_model(lambda m: _strides(m, [0.0, 16.0]), "stride0"), "strides [0.0, 16.0]"),
    "detect-stride-inf": (_model(lambda m: _strides(m, [8.0, float("inf")]), "strideinf"), "strides [8.0, inf]"),
    "groups-text": (_model(_set("model.1.conv.groups", "two"), "groups"), "groups='two'"),
    "nc-text": (_model(_set("model.14.nc", "three"), "nc"), "nc='three'"),
    "eps-list": (_model(_set("model.1.bn.eps", [1, 2]), "eps"), "(its BatchNorm): eps=[1, 2]"),
    "anchors-0d": (_model(_buffer("model.14.anchors", torch.tensor(1.0)), "anchors"), "anchors of shape ()"),
    "focus-1d-kernel": (_model(_parameter("model.0.conv.conv.weight", torch.zeros(5)), "focus"),
                        "kernel of shape (5,) is not a square 2-D kernel"),
    "int-for-set": (_model(_set("model.1.bn._non_persistent_buffers_set", 5), "set"),
                    "_non_persistent_buffers_set is a int, not a set"),
    "forged-class-name": (forged_class, "Conv\\n\\x1b[2J\\x1b[Herror: everything is fine"),
    "huge-int-nc": (_model(_set("model.14.nc", 10**5000), "hugeint"), "nc=<an integer of 16610 bits>"),
    "huge-int-module-name": (_model(_module("model", 10**5000, nn.ReLU()), "hugename"),
                             "layer 15 (ReLU): ReLU is not a YOLOv5 layer"),
    "huge-int-shape": (huge_shape, "a tensor whose shape is not a short list of non-negative integers"),
    "repeated-block": (_model(_repeat_bottleneck, "repeated", y5.v6_layout), "more than 4000 darknet layers"),
}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, (build, _) in HOSTILE.items():
        print(name, build(out))
