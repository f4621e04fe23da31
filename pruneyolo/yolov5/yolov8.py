"""A YOLOv8 / YOLO11 model (Ultralytics, stock or pruned; inert records) -> Darknet cfg text + DarknetWeights.

Layer by layer and exact, every width from the tensors; classes are matched by name (C2f_v2 of Torch-Pruning,
the *Pruned classes of network-slimming forks). The forms:
- Conv / DWConv: [convolutional] (groups for the depthwise one), BatchNorm eps 1e-3 folded as for YOLOv5.
- C2f / C3k2: cv1, `[route] groups=2 group_id=1` for its second half (two convs where the halves differ, as
  C2f_v2's cv0/cv1 and uneven C2fPruned splits), the bottlenecks ([shortcut] where they add), a [route] of
  both halves and every bottleneck's output, cv2. C3k: as YOLOv5's C3.
- SPPF: chained 5x5 [maxpool]s. Upsample, Concat: [upsample], [route].
- C2PSA: cv1 as two convs, then per PSABlock the qkv conv (its filters reordered: all queries, all keys, all
  values), [attention], the values' depthwise conv added to it, proj, the residual, the feed-forward pair.
- Detect: per level the box and class branches joined by a [route] into a [detect] head (DFL, reg_max bins).
[detect] and [attention] are pruneyolo sections (darknet and OpenCV read neither).
"""

from __future__ import annotations

import numpy as np

from pruneyolo import __version__
from pruneyolo.darknet.graph import MAX_REG_MAX
from pruneyolo.darknet.weights import DarknetWeights
from pruneyolo.errors import printable, show
from pruneyolo.yolov5.checkpoint import ModuleRecord
from pruneyolo.yolov5.mapping import (
    BOTTLENECK_KINDS,
    MAX_CLASSES,
    Emitter,
    Imported,
    LayerError,
    _bottleneck,
    _child,
    _layer_sources,
    _strides,
    _tensor,
    c3,
    class_names,
    concat,
    flag,
    net_section,
    number,
    upsample,
    whole,
)

ROOTS = ("DetectionModel", "DetectionModelPruned")
CONV_KINDS = ("Conv", "DWConv")
C2F_KINDS = ("C2f", "C3k2", "C2f_v2", "C2fPruned")
SPPF_KINDS = ("SPPF", "SPPFPruned")
HEAD_KINDS = ("Detect", "DetectPruned")
MAX_HEADS = 1024


def is_anchor_free(root: ModuleRecord) -> bool:
    """True for an Ultralytics YOLOv8-style model: its last layer is a head with a DFL, not YOLOv5's anchors."""
    layers = root.child("model")
    last = list(layers.children.values())[-1] if layers is not None and layers.children else None
    return last is not None and last.kind in HEAD_KINDS and last.child("dfl") is not None


def _rows(record: ModuleRecord, rows: np.ndarray) -> ModuleRecord:
    """A Conv (its Conv2d and BatchNorm) keeping only output channels `rows`, in that order."""
    tensors = {name: array[rows] if array.ndim else array for name, array in record.tensors.items()}
    children = {name: _rows(child, rows) if child.kind in ("Conv2d", "BatchNorm2d") else child
                for name, child in record.children.items()}
    return ModuleRecord(record.kind, record.origin, record.attrs, tensors, children)


def _filters(record: ModuleRecord, where: str) -> int:
    """A Conv's output channels, from its kernel."""
    kernel = _tensor(_child(record, "conv", where, ("Conv2d",)), "weight", f"{where}.conv")
    if kernel.ndim != 4:
        raise LayerError(f"{where}.conv: a kernel of shape {kernel.shape}, not 4-D")
    return kernel.shape[0]


def conv(out: Emitter, record: ModuleRecord, source: int, where: str, rows: np.ndarray | None = None) -> int:
    """Conv or DWConv (Conv2d, BatchNorm2d, activation), optionally only output channels `rows`."""
    if record.kind not in CONV_KINDS:
        raise LayerError(f"{where}: a {record.kind}, where pruneyolo expects Conv")
    plain = ModuleRecord("Conv", record.origin, record.attrs, record.tensors, record.children)
    return out.conv_block(plain if rows is None else _rows(plain, rows), source, where)


def _split(out: Emitter, record: ModuleRecord, first: int, source: int, where: str) -> tuple[int, int]:
    """A Conv as two convs: its first `first` output channels, then the rest."""
    filters = _filters(record, where)
    if not 0 < first < filters:
        raise LayerError(f"{where}: a split at channel {first} of its {filters}")
    return (conv(out, record, source, f"{where}[:{first}]", np.arange(first)),
            conv(out, record, source, f"{where}[{first}:]", np.arange(first, filters)))


def _sections(record: ModuleRecord, width: int, where: str) -> tuple[int, int]:
    """How a C2f's cv1 output splits: C2fPruned's cv1_split_sections, else two equal halves."""
    sections = record.attrs.get("cv1_split_sections")
    if sections is None:
        if width % 2:
            raise LayerError(f"{where}: cv1 has {width} channels, which do not split into equal halves")
        return width // 2, width // 2
    if not (isinstance(sections, (list, tuple)) and len(sections) == 2):
        raise LayerError(f"{where}: cv1_split_sections={show(sections)}, where a pruned C2f has two widths")
    first, second = (whole(value, "cv1_split_sections", where, 1, width) for value in sections)
    if first + second != width:
        raise LayerError(f"{where}: cv1_split_sections {first}+{second} does not match cv1's {width} channels")
    return first, second


def c2f(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """cv2(cat(a, b, m0(b), m1(m0(b)), ...)) with a, b the halves of cv1(x) (C2f_v2: cv0(x), cv1(x))."""
    if record.child("cv0") is not None:
        halves = [conv(out, _child(record, name, where), source, f"{where}.{name}") for name in ("cv0", "cv1")]
    else:
        cv1 = _child(record, "cv1", where)
        first, second = _sections(record, _filters(cv1, f"{where}.cv1"), where)
        if first == second:
            halves = [conv(out, cv1, source, f"{where}.cv1")]
            out.add("route", {"layers": halves[0], "groups": 2, "group_id": 1}, second)
        else:
            halves = list(_split(out, cv1, first, source, f"{where}.cv1"))
    parts, last = list(halves), out.last
    for name, block in _child(record, "m", where).children.items():
        last = inner(out, block, last, f"{where}.m.{name}")
        parts.append(last)
    return conv(out, _child(record, "cv2", where), out.route(parts, where), f"{where}.cv2")


def inner(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """One block of a C2f / C3k2's `m`: a Bottleneck or a C3k."""
    if record.kind in BOTTLENECK_KINDS:
        return _bottleneck(out, _plain_convs(record), source, where)
    if record.kind == "C3k":
        return c3(out, _plain_convs(record), source, where)
    raise LayerError(f"{where}: a {record.kind}, where pruneyolo expects Bottleneck or C3k")


def _plain_convs(record: ModuleRecord) -> ModuleRecord:
    """A block whose DWConv children read as Conv (the same Conv2d + BatchNorm + activation), recursively."""
    children = {name: _plain_convs(child) for name, child in record.children.items()}
    kind = "Conv" if record.kind == "DWConv" else record.kind
    return ModuleRecord(kind, record.origin, record.attrs, record.tensors, children)


def sppf(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """cv2(cat(x, y1, ..., yn)), each y the same pool of the one before (n = 3 unless stored); + input if add."""
    x = conv(out, _child(record, "cv1", where), source, f"{where}.cv1")
    pool = _child(record, "m", where)
    chain = [x]
    for _ in range(whole(record.attrs.get("n", 3), "n", where, 1, 16)):
        chain.append(out.maxpool(pool, chain[-1], f"{where}.m"))
    result = conv(out, _child(record, "cv2", where), out.route(chain, where), f"{where}.cv2")
    if not flag(record.attrs.get("add"), "add", where):
        return result
    if out.channels[result] != out.channels_of(source):
        raise LayerError(f"{where}: adds {out.channels[result]} channels to its {out.channels_of(source)}-channel "
                         "input")
    return out.add("shortcut", {"from": source - (out.last + 1), "activation": "linear"}, out.channels[result])


def _residual(out: Emitter, source: int) -> int:
    return out.add("shortcut", {"from": source - (out.last + 1), "activation": "linear"}, out.channels[out.last])


def attention(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """proj(attention(q, k, v) + pe(v)) with q, k, v from the qkv conv, reordered into blocks for [attention]."""
    channels = out.channels_of(source)
    heads = whole(record.attrs.get("num_heads"), "num_heads", where, 1, MAX_HEADS)
    key_dim = whole(record.attrs.get("key_dim"), "key_dim", where, 1, channels)
    head_dim = whole(record.attrs.get("head_dim"), "head_dim", where, 1, channels)
    if heads * head_dim != channels or head_dim != 2 * key_dim:
        raise LayerError(f"{where}: {heads} heads x head_dim {head_dim} (key_dim {key_dim}) do not divide its "
                         f"{channels} channels as Attention does (head_dim = channels / heads = 2 x key_dim)")
    scale = number(record.attrs.get("scale", key_dim ** -0.5), "scale", where, 0, 1e6)
    if abs(scale - key_dim ** -0.5) > 1e-6 * scale:
        raise LayerError(f"{where}: scale {scale:g} is not key_dim^-0.5 ({key_dim ** -0.5:g})")
    qkv = _child(record, "qkv", where)
    per_head = 2 * key_dim + head_dim
    if _filters(qkv, f"{where}.qkv") != heads * per_head:
        raise LayerError(f"{where}.qkv: {_filters(qkv, f'{where}.qkv')} filters, where {heads} heads need "
                         f"{heads * per_head}")
    starts = np.arange(heads)[:, None] * per_head
    order = np.concatenate([(starts + np.arange(key_dim)).ravel(), (starts + key_dim + np.arange(key_dim)).ravel(),
                            (starts + 2 * key_dim + np.arange(head_dim)).ravel()])
    mixed = conv(out, qkv, source, f"{where}.qkv", order)
    attended = out.add("attention", {"heads": heads, "key_dim": key_dim}, channels)
    out.add("route", {"layers": mixed, "groups": 2, "group_id": 1}, channels)
    conv(out, _child(record, "pe", where), out.last, f"{where}.pe")
    _residual(out, attended)
    return conv(out, _child(record, "proj", where), out.last, f"{where}.proj")


def psa_block(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """x + attn(x), then that + ffn(that) (without the additions if add is False)."""
    add = flag(record.attrs.get("add", True), "add", where)
    result = attention(out, _child(record, "attn", where, ("Attention",)), source, f"{where}.attn")
    if add:
        result = _residual(out, source)
    before = result
    for name, block in _child(record, "ffn", where).children.items():
        result = conv(out, block, result, f"{where}.ffn.{name}")
    return _residual(out, before) if add else result


def c2psa(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """cv2(cat(a, m(b))) with a, b the halves of cv1(x), m a chain of PSABlocks."""
    cv1 = _child(record, "cv1", where)
    width = _filters(cv1, f"{where}.cv1")
    if width % 2:
        raise LayerError(f"{where}: cv1 has {width} channels, which do not split into equal halves")
    first, last = _split(out, cv1, width // 2, source, f"{where}.cv1")
    for name, block in _child(record, "m", where).children.items():
        if block.kind != "PSABlock":
            raise LayerError(f"{where}.m.{name}: a {block.kind}, where pruneyolo expects PSABlock")
        last = psa_block(out, block, last, f"{where}.m.{name}")
    return conv(out, _child(record, "cv2", where), out.route([first, last], where), f"{where}.cv2")


def _branch(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """One Detect branch: Conv (or Sequential of DWConv, Conv) blocks, then a biased 1x1 Conv2d."""
    blocks = list(record.children.items())
    if len(blocks) < 2:
        raise LayerError(f"{where}: a branch of {len(blocks)} modules, where Detect's end with a Conv2d")
    for name, block in blocks[:-1]:
        parts = list(block.children.items()) if block.kind == "Sequential" else [(None, block)]
        for part_name, part in parts:
            here = f"{where}.{name}" if part_name is None else f"{where}.{name}.{part_name}"
            source = conv(out, part, source, here)
    name, final = blocks[-1]
    return out.conv2d(final, None, "linear", source, f"{where}.{name}")


def _check_dfl(record: ModuleRecord, reg_max: int, where: str) -> None:
    """The DFL is the fixed expectation over 0..reg_max-1: a 1x1 conv whose weight is exactly arange(reg_max)."""
    dfl = _child(record, "dfl", where, ("DFL",))
    weight = _tensor(_child(dfl, "conv", f"{where}.dfl", ("Conv2d",)), "weight", f"{where}.dfl.conv")
    if weight.shape != (1, reg_max, 1, 1) or not np.array_equal(weight.ravel(), np.arange(reg_max)):
        raise LayerError(f"{where}.dfl: its conv is not the fixed arange({reg_max}) expectation of DFL")


def detect(out: Emitter, record: ModuleRecord, sources: list[int], strides: np.ndarray, where: str) -> int:
    """Per level: the box branch (cv2) and the class branch (cv3) side by side, then a [detect] head."""
    classes = whole(record.attrs.get("nc"), "nc", where, 1, MAX_CLASSES)
    reg_max = whole(record.attrs.get("reg_max"), "reg_max", where, 2, MAX_REG_MAX)
    _check_dfl(record, reg_max, where)
    boxes = list(_child(record, "cv2", where).children.values())
    scores = list(_child(record, "cv3", where).children.values())
    if not len(boxes) == len(scores) == len(sources) == len(strides):
        raise LayerError(f"{where}: {len(boxes)} box branches, {len(scores)} class branches, {len(sources)} inputs "
                         f"and {len(strides)} strides do not describe the same levels")
    for level, (box, score, source) in enumerate(zip(boxes, scores, sources, strict=True)):
        out.comment = f"Detect level {level}: stride {int(strides[level])}"
        box_layer = _branch(out, box, source, f"{where}.cv2.{level}")
        score_layer = _branch(out, score, source, f"{where}.cv3.{level}")
        if out.channels[box_layer] != 4 * reg_max or out.channels[score_layer] != classes:
            raise LayerError(f"{where}: level {level} gives {out.channels[box_layer]} box and "
                             f"{out.channels[score_layer]} class channels, where reg_max={reg_max} and nc={classes} "
                             f"need {4 * reg_max} and {classes}")
        out.route([box_layer, score_layer], where)
        out.add("detect", {"classes": classes, "reg_max": reg_max}, out.channels[out.last])
    return out.last


SINGLE_INPUT = {
    **{kind: conv for kind in CONV_KINDS},
    **{kind: c2f for kind in C2F_KINDS},
    **{kind: sppf for kind in SPPF_KINDS},
    "C2PSA": c2psa,
    "Upsample": upsample,
}
SUPPORTED = (*SINGLE_INPUT, "Concat", *HEAD_KINDS)


def _header(root: ModuleRecord, source_name: str) -> str:
    return (f"# imported by pruneyolo {__version__} from {printable(source_name)} ({root.kind}, Ultralytics "
            "YOLOv8/YOLO11); its [detect] and [attention] sections are pruneyolo's own.\n"
            "# Every width comes from the checkpoint's tensors.\n")


def to_darknet(root: ModuleRecord, size: tuple[int, int], source_name: str = "") -> Imported:
    """The cfg text and weights of an Ultralytics detection model record at `size` (width, height)."""
    if root.kind not in ROOTS:
        raise LayerError(f"the model is a {root.kind}; pruneyolo imports {', '.join(ROOTS)}")
    out = Emitter(3, "darknet")
    outputs: dict[int, int] = {}
    strides: np.ndarray | None = None
    classes = 0
    layers = list(_child(root, "model", root.kind).children.values())
    for index, record in enumerate(layers):
        where = f"layer {index} ({record.kind})"
        if strides is not None:
            raise LayerError(f"{where}: follows the Detect head, which must be the last layer")
        if record.kind not in SUPPORTED:
            raise LayerError(f"{where}: {record.kind} is not an Ultralytics detection layer pruneyolo can import "
                             f"(supported: {', '.join(sorted(set(SUPPORTED)))})")
        sources = _layer_sources(record, index, outputs, where)
        out.comment = f"Ultralytics layer {index}: {record.kind}"
        if record.kind == "Concat":
            outputs[index] = concat(out, record, sources, where)
        elif record.kind in HEAD_KINDS:
            strides, classes = _strides(root, record, where), whole(record.attrs.get("nc"), "nc", where, 1, MAX_CLASSES)
            outputs[index] = detect(out, record, sources, strides, where)
        elif len(sources) != 1:
            raise LayerError(f"{where}: takes one input, but from={show(record.attrs.get('f'))}")
        else:
            outputs[index] = SINGLE_INPUT[record.kind](out, record, sources[0], where)
    net = net_section(size, strides)
    text = _header(root, source_name) + "\n" + "\n\n".join([net, *out.blocks]) + "\n"
    return Imported(text, DarknetWeights(0, 2, 5, 0, out.weights), class_names(root, classes), "darknet",
                    tuple(int(s) for s in strides))
