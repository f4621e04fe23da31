"""A YOLOv5 model (inert records) -> Darknet cfg text + DarknetWeights, layer by layer and exact.

Every width comes from the tensors (a pruned model's stored yaml holds the unpruned template). The forms:
- Conv: [convolutional]; BatchNorm eps (1e-3) is folded into the running variance for darknet's 1e-6.
- Focus: one 6x6 stride-2 pad-2 convolution whose kernel is the 3x3 kernel re-ordered (space-to-depth).
- C3 (and the pruned variants): cv1, the bottlenecks ([shortcut] where they add), a route to the input,
  cv2, a route joining both, cv3. BottleneckCSP likewise, its BatchNorm over the concat split per half.
- SPP: parallel [maxpool]s 5/9/13; SPPF: three chained 5x5 [maxpool]s (the same values).
- Detect: per level a 1x1 conv with logistic activation and a [yolo] with new_coords=1 and scale_x_y=2.0,
  which is YOLOv5's decode. With Hardswish (no darknet activation) the cfg is pruneyolo's yolov5 dialect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pruneyolo import __version__
from pruneyolo.activations import canonical_activation
from pruneyolo.darknet.weights import BN_EPS, ConvWeights, DarknetWeights
from pruneyolo.errors import printable, show
from pruneyolo.yolov5.checkpoint import ModuleRecord

ROOTS = ("Model", "DetectionModel", "ModelPruned")
C3_KINDS = ("C3", "C3Pruned", "C3PrunedNoRes")
BOTTLENECK_KINDS = ("Bottleneck", "BottleneckPruned")
SPP_KINDS = ("SPP", "SPPPruned")
SPPF_KINDS = ("SPPF", "SPPFPruned")
ACTIVATIONS = ("SiLU", "LeakyReLU", "Hardswish", "ReLU", "Identity")  # mapped by activations.canonical_activation
DARKNET_LEAKY_SLOPE = 0.1
DEFAULT_SIZE = (640, 640)
MAX_GEOMETRY = 1024  # kernel sizes, strides, paddings, groups, upsample factors: YOLOv5's are at most 64
MAX_STRIDE = 1024  # Detect strides; YOLOv5's are 8 to 64
MAX_CLASSES = 100_000
MAX_LAYERS = 4000  # darknet layers emitted; YOLOv5x6 needs about 600 (a file could repeat one shared block)


class LayerError(Exception):
    """A layer that cannot be imported; `where` names it (top-level index, class, sub-module path)."""


@dataclass(frozen=True)
class Norm:
    """A BatchNorm's per-channel arrays and eps."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    def part(self, start: int, stop: int) -> Norm:
        return Norm(self.gamma[start:stop], self.beta[start:stop], self.mean[start:stop], self.var[start:stop],
                    self.eps)


@dataclass(frozen=True)
class Imported:
    """The Darknet form of a checkpoint: cfg text, weights by conv layer, class names, dialect."""

    cfg_text: str
    weights: DarknetWeights
    names: list[str]
    dialect: str
    strides: tuple[int, ...]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole(value, what: str, where: str, low: int = 0, high: int = MAX_GEOMETRY) -> int:
    """An integer attribute within [low, high]; anything else is one LayerError line."""
    if not _is_int(value) or not low <= value <= high:
        raise LayerError(f"{where}: {what}={show(value)}, where YOLOv5 has an integer from {low} to {high}")
    return value


def number(value, what: str, where: str, low: float, high: float) -> float:
    """A finite number attribute within [low, high]; anything else is one LayerError line."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise LayerError(f"{where}: {what}={show(value)}, where YOLOv5 has a number from {low:g} to {high:g}")
    return float(value)


def flag(value, what: str, where: str) -> bool:
    """A True/False attribute (None counts as False)."""
    if value is not None and not isinstance(value, bool):
        raise LayerError(f"{where}: {what}={show(value)}, where YOLOv5 has True or False")
    return bool(value)


def _pair(value, what: str, where: str, low: int = 0) -> int:
    """An int, or a tuple of two equal ints (PyTorch's kernel_size/stride/padding), as one int."""
    values = value if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(_is_int(v) for v in values):
        raise LayerError(f"{where}: {what}={show(value)}, where PyTorch has an integer or a pair of them")
    if values[0] != values[1]:
        raise LayerError(f"{where}: {what} {show(value)} is not square; darknet layers are")
    return whole(values[0], what, where, low)


def _tensor(record: ModuleRecord, name: str, where: str) -> np.ndarray:
    if name not in record.tensors:
        raise LayerError(f"{where}: {record.kind} has no '{name}' tensor")
    return record.tensors[name]


def _child(record: ModuleRecord, name: str, where: str, kinds: tuple[str, ...] | None = None) -> ModuleRecord:
    child = record.child(name)
    if child is None:
        raise LayerError(f"{where}: {record.kind} has no '{name}' submodule")
    if kinds and child.kind not in kinds:
        raise LayerError(f"{where}.{name}: a {child.kind}, where pruneyolo expects {' or '.join(kinds)}")
    return child


def _norm(record: ModuleRecord, where: str) -> Norm:
    if record.kind != "BatchNorm2d":
        raise LayerError(f"{where}: a {record.kind}, where pruneyolo expects BatchNorm2d")
    arrays = [_tensor(record, name, where) for name in ("weight", "bias", "running_mean", "running_var")]
    if arrays[0].ndim != 1 or any(array.shape != arrays[0].shape for array in arrays):
        raise LayerError(f"{where}: BatchNorm2d arrays of unequal shapes {[a.shape for a in arrays]}")
    return Norm(*arrays, number(record.attrs.get("eps", 1e-5), "eps", where, 0, 1))


def activation_name(record: ModuleRecord | None, where: str) -> str:
    """The darknet activation for a PyTorch activation module (none = linear)."""
    if record is None:
        return "linear"
    if record.kind not in ACTIVATIONS:
        raise LayerError(f"{where}: activation {record.kind} is not supported (SiLU, LeakyReLU(0.1), Hardswish, "
                         "ReLU, Identity are)")
    if record.kind == "LeakyReLU":
        slope = number(record.attrs.get("negative_slope", 0.01), "negative_slope", where, -1e6, 1e6)
        if abs(slope - DARKNET_LEAKY_SLOPE) > 1e-9:
            raise LayerError(f"{where}: LeakyReLU(negative_slope={slope:g}); darknet's leaky has slope 0.1")
    return canonical_activation(record.kind)


def focus_kernel(kernel: np.ndarray) -> np.ndarray:
    """The (2k)x(2k) stride-2 kernel equal to Focus's k x k conv over its space-to-depth input.

    Focus stacks x[::2, ::2], x[1::2, ::2], x[::2, 1::2], x[1::2, 1::2]: group g holds row offset g % 2 and
    column offset g // 2, so input channel g*C + c at tap (dy, dx) is pixel (2dy + g % 2, 2dx + g // 2) of c.
    """
    filters, stacked, size, _ = kernel.shape
    channels = stacked // 4
    result = np.zeros((filters, channels, 2 * size, 2 * size), np.float32)
    for group in range(4):
        row, column = group % 2, group // 2
        result[:, :, row::2, column::2] = kernel[:, group * channels:(group + 1) * channels]
    return result


def _f32(array) -> np.ndarray:
    return np.ascontiguousarray(array, np.float32)


def _number(value: float) -> str:
    """A float32 value as the shortest decimal that reads back the same."""
    return np.format_float_positional(np.float32(value), trim="-")


class Emitter:
    """Darknet sections and conv weights written so far, with every layer's output channels."""

    def __init__(self, input_channels: int, dialect: str):
        self.input_channels, self.dialect = input_channels, dialect
        self.blocks: list[str] = []
        self.channels: list[int] = []
        self.weights: dict[int, ConvWeights] = {}
        self.comment = ""

    @property
    def last(self) -> int:
        return len(self.channels) - 1

    def channels_of(self, index: int) -> int:
        return self.input_channels if index < 0 else self.channels[index]

    def add(self, name: str, options: dict, channels: int) -> int:
        if len(self.channels) >= MAX_LAYERS:
            raise LayerError(f"more than {MAX_LAYERS} darknet layers, far more than any YOLOv5 model (one block "
                             "repeated?)")
        lines = ([f"# {self.comment}"] if self.comment else []) + [f"[{name}]"]
        lines += [f"{key}={value}" for key, value in options.items()]
        self.blocks.append("\n".join(lines))
        self.channels.append(channels)
        self.comment = ""
        return self.last

    def route(self, sources: list[int], where: str) -> int:
        """The layer holding the concatenation of `sources` (they themselves if just the last layer)."""
        if sources == [self.last]:
            return self.last
        if any(source < 0 for source in sources):
            raise LayerError(f"{where}: reads the input image after other layers, which darknet cannot route")
        total = sum(self.channels[source] for source in sources)
        return self.add("route", {"layers": ",".join(map(str, sources))}, total)

    def conv(self, kernel: np.ndarray, bias: np.ndarray | None, norm: Norm | None, activation: str, *,
             stride: int, padding: int, groups: int, source: int, where: str) -> int:
        """One [convolutional] over `source`; a conv bias before BatchNorm is folded into its mean."""
        filters, per_group, size, _ = kernel.shape
        if norm is not None and len(norm.gamma) != filters:
            raise LayerError(f"{where}: {filters} filters but {len(norm.gamma)} BatchNorm channels")
        if per_group * groups != self.channels_of(source):
            raise LayerError(f"{where}: its weights take {per_group * groups} input channels, but its input has "
                             f"{self.channels_of(source)}")
        self.route([source], where)
        options = {"filters": filters, "size": size, "stride": stride}
        if size % 2 and padding == size // 2:
            options["pad"] = 1
        elif padding:
            options["padding"] = padding  # e.g. the 6x6 stem's 2, where pad=1 would mean 3
        if groups > 1:
            options["groups"] = groups
        if norm is None:
            layer = ConvWeights(bias=_f32(np.zeros(filters) if bias is None else bias), weights=_f32(kernel))
        else:
            options = {"batch_normalize": 1, **options}
            variance = norm.var + norm.eps - BN_EPS
            if (variance <= 0).any():
                raise LayerError(f"{where}: BatchNorm eps {norm.eps:g} with its running_var cannot be expressed "
                                 "with darknet's eps 1e-6")
            layer = ConvWeights(bias=_f32(norm.beta), scales=_f32(norm.gamma),
                                mean=_f32(norm.mean if bias is None else norm.mean - bias),
                                variance=_f32(variance), weights=_f32(kernel))
        options["activation"] = activation
        index = self.add("convolutional", options, filters)
        self.weights[index] = layer
        return index

    def conv2d(self, record: ModuleRecord, norm_record: ModuleRecord | None, activation: str, source: int,
               where: str, channels: slice = slice(None)) -> int:
        """A torch Conv2d (+ BatchNorm, or the `channels` part of a wider one) + activation."""
        if record.kind != "Conv2d":
            raise LayerError(f"{where}: a {record.kind}, where pruneyolo expects Conv2d")
        kernel = _tensor(record, "weight", where)
        if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3]:
            raise LayerError(f"{where}: kernel of shape {kernel.shape} is not square")
        attrs = record.attrs
        if _pair(attrs.get("dilation", 1), "dilation", where) != 1:
            raise LayerError(f"{where}: dilated convolutions are not supported")
        if attrs.get("padding_mode", "zeros") != "zeros":
            raise LayerError(f"{where}: padding_mode {show(attrs['padding_mode'])}; darknet pads with zeros")
        padding = attrs.get("padding", 0)
        if isinstance(padding, str):
            raise LayerError(f"{where}: padding={show(padding)}; give explicit padding")
        norm = None
        if norm_record is not None:
            full = _norm(norm_record, f"{where} (its BatchNorm)")
            norm = full.part(*channels.indices(len(full.gamma))[:2])
        return self.conv(kernel, record.tensors.get("bias"), norm, activation,
                         stride=_pair(attrs.get("stride", 1), "stride", where, 1),
                         padding=_pair(padding, "padding", where), groups=whole(attrs.get("groups", 1), "groups",
                                                                                 where, 1),
                         source=source, where=where)

    def conv_block(self, record: ModuleRecord, source: int, where: str) -> int:
        """YOLOv5's Conv: Conv2d, BatchNorm2d, activation."""
        if record.kind != "Conv":
            raise LayerError(f"{where}: a {record.kind}, where pruneyolo expects Conv")
        act = activation_name(record.child("act"), f"{where}.act")
        return self.conv2d(_child(record, "conv", where), record.child("bn"), act, source, f"{where}.conv")

    def maxpool(self, record: ModuleRecord, source: int, where: str) -> int:
        """A stride-1 'same' MaxPool2d: darknet's [maxpool] pads size-1 in total, as PyTorch's k//2 each side."""
        if record.kind != "MaxPool2d":
            raise LayerError(f"{where}: a {record.kind}, where pruneyolo expects MaxPool2d")
        size = _pair(record.attrs.get("kernel_size"), "kernel_size", where, 1)
        stride = _pair(record.attrs.get("stride") or size, "stride", where, 1)
        padding = _pair(record.attrs.get("padding", 0), "padding", where)
        dilation = _pair(record.attrs.get("dilation", 1), "dilation", where, 1)
        ceil_mode = flag(record.attrs.get("ceil_mode"), "ceil_mode", where)
        if stride != 1 or size % 2 == 0 or padding != size // 2 or dilation != 1 or ceil_mode:
            raise LayerError(f"{where}: MaxPool2d(kernel {size}, stride {stride}, padding {padding}) is not the "
                             "stride-1 'same' pooling of SPP/SPPF")
        self.route([source], where)
        return self.add("maxpool", {"size": size, "stride": 1}, self.channels_of(source))


# --- YOLOv5 layers ----------------------------------------------------------------------------------------

def _bottleneck(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    hidden = out.conv_block(_child(record, "cv1", where), source, f"{where}.cv1")
    result = out.conv_block(_child(record, "cv2", where), hidden, f"{where}.cv2")
    if not flag(record.attrs.get("add"), "add", where):
        return result
    if out.channels[result] != out.channels_of(source):
        raise LayerError(f"{where}: adds {out.channels[result]} channels to its {out.channels_of(source)}-channel "
                         "input")
    return out.add("shortcut", {"from": source - (out.last + 1), "activation": "linear"}, out.channels[result])


def _bottlenecks(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    sequence = record.child("m")
    for name, block in (sequence.children.items() if sequence else ()):
        if block.kind not in BOTTLENECK_KINDS:
            raise LayerError(f"{where}.m.{name}: a {block.kind}, where pruneyolo expects Bottleneck")
        source = _bottleneck(out, block, source, f"{where}.m.{name}")
    return source


def c3(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """cv3(cat(m(cv1(x)), cv2(x))); C3PrunedNoRes has no m."""
    inner = _bottlenecks(out, record, out.conv_block(_child(record, "cv1", where), source, f"{where}.cv1"), where)
    side = out.conv_block(_child(record, "cv2", where), source, f"{where}.cv2")
    return out.conv_block(_child(record, "cv3", where), out.route([inner, side], where), f"{where}.cv3")


def bottleneck_csp(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """cv4(act(bn(cat(cv3(m(cv1(x))), cv2(x))))): the BatchNorm and activation split over the two convs."""
    inner = _bottlenecks(out, record, out.conv_block(_child(record, "cv1", where), source, f"{where}.cv1"), where)
    act = activation_name(record.child("act"), f"{where}.act")
    norm = _child(record, "bn", where)
    width = _tensor(_child(record, "cv3", where), "weight", f"{where}.cv3").shape[0]
    first = out.conv2d(_child(record, "cv3", where), norm, act, inner, f"{where}.cv3", slice(0, width))
    second = out.conv2d(_child(record, "cv2", where), norm, act, source, f"{where}.cv2", slice(width, None))
    return out.conv_block(_child(record, "cv4", where), out.route([first, second], where), f"{where}.cv4")


def spp(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """cv2(cat(x, pool5(x), pool9(x), pool13(x))) with x = cv1(input)."""
    x = out.conv_block(_child(record, "cv1", where), source, f"{where}.cv1")
    pools = [out.maxpool(pool, x, f"{where}.m.{name}") for name, pool in _child(record, "m", where).children.items()]
    return out.conv_block(_child(record, "cv2", where), out.route([x, *pools], where), f"{where}.cv2")


def sppf(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """cv2(cat(x, y1, y2, y3)), each y the same pool of the one before."""
    x = out.conv_block(_child(record, "cv1", where), source, f"{where}.cv1")
    pool = _child(record, "m", where)
    chain = [x]
    for _ in range(3):
        chain.append(out.maxpool(pool, chain[-1], f"{where}.m"))
    return out.conv_block(_child(record, "cv2", where), out.route(chain, where), f"{where}.cv2")


def focus(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    """Focus's conv as one stride-2 conv on the image (see focus_kernel)."""
    block = _child(record, "conv", where, ("Conv",))
    conv = _child(block, "conv", f"{where}.conv", ("Conv2d",))
    kernel = _tensor(conv, "weight", f"{where}.conv.conv")
    if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3]:
        raise LayerError(f"{where}.conv.conv: kernel of shape {kernel.shape} is not a square 2-D kernel")
    size = kernel.shape[2]
    stride = _pair(conv.attrs.get("stride", 1), "stride", where, 1)
    padding = _pair(conv.attrs.get("padding", 0), "padding", where)
    if stride != 1 or padding != size // 2 or size % 2 == 0 or whole(conv.attrs.get("groups", 1), "groups",
                                                                     where, 1) != 1 or kernel.shape[1] % 4:
        raise LayerError(f"{where}: Focus over a {size}x{size} stride-{stride} pad-{padding} conv is not the "
                         "standard form")
    norm_record = block.child("bn")
    norm = _norm(norm_record, f"{where}.conv.bn") if norm_record else None
    act = activation_name(block.child("act"), f"{where}.conv.act")
    return out.conv(focus_kernel(kernel), conv.tensors.get("bias"), norm, act, stride=2, padding=size - 1,
                    groups=1, source=source, where=where)


def concat(out: Emitter, record: ModuleRecord, sources: list[int], where: str) -> int:
    if record.attrs.get("d", 1) != 1 or not _is_int(record.attrs.get("d", 1)):
        raise LayerError(f"{where}: Concat along dimension {show(record.attrs['d'])}; only channels (1) are "
                         "supported")
    return out.route(sources, where)


def upsample(out: Emitter, record: ModuleRecord, source: int, where: str) -> int:
    factor = record.attrs.get("scale_factor")
    factors = factor if isinstance(factor, (tuple, list)) else (factor, factor)
    integral = (len(factors) == 2 and all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in factors)
                and factors[0] == factors[1] and 1 <= factors[0] <= MAX_GEOMETRY and float(factors[0]).is_integer())
    if not integral or record.attrs.get("mode", "nearest") != "nearest" or record.attrs.get("size") is not None:
        raise LayerError(f"{where}: Upsample(scale_factor={show(factor)}, mode={show(record.attrs.get('mode'))}); "
                         "only integer nearest-neighbour factors are supported")
    out.route([source], where)
    return out.add("upsample", {"stride": int(factors[0])}, out.channels_of(source))


def detect(out: Emitter, record: ModuleRecord, sources: list[int], strides: np.ndarray, where: str) -> int:
    """Per level: the 1x1 conv (logistic, or linear in the yolov5 dialect) and a new_coords [yolo]."""
    convs = list(_child(record, "m", where).children.values())
    anchors = _tensor(record, "anchors", where)
    levels, per_level = anchors.shape[:2] if anchors.ndim == 3 else (0, 0)
    if anchors.ndim != 3 or anchors.shape[2] != 2 or len(convs) != levels or len(sources) != levels \
            or len(strides) != levels:
        raise LayerError(f"{where}: {len(convs)} convs, {len(sources)} inputs, {len(strides)} strides and anchors "
                         f"of shape {anchors.shape} do not describe the same levels")
    if not (np.isfinite(anchors).all() and (anchors > 0).all()):
        raise LayerError(f"{where}: anchors {show(anchors.tolist())} are not all positive numbers")
    classes = whole(record.attrs.get("nc"), "nc", where, 1, MAX_CLASSES)
    for level, conv in enumerate(convs):
        if _tensor(conv, "weight", f"{where}.m.{level}").shape[0] != per_level * (classes + 5):
            raise LayerError(f"{where}: {per_level} anchors x ({classes} classes + 5) does not match head conv "
                             f"m.{level}")
    pixels = anchors * np.asarray(strides, np.float32)[:, None, None]
    anchor_text = ", ".join(f"{_number(w)},{_number(h)}" for w, h in pixels.reshape(-1, 2))
    activation = "linear" if out.dialect == "yolov5" else "logistic"
    for level, (conv, source) in enumerate(zip(convs, sources, strict=True)):
        out.comment = f"Detect level {level}: stride {int(strides[level])}"
        out.conv2d(conv, None, activation, source, f"{where}.m.{level}")
        mask = ",".join(str(level * per_level + a) for a in range(per_level))
        out.add("yolo", {"mask": mask, "anchors": anchor_text, "classes": classes, "num": levels * per_level,
                         "new_coords": 1, "scale_x_y": 2.0}, out.channels[out.last])
    return out.last


# --- the whole model --------------------------------------------------------------------------------------

def _layer_sources(record: ModuleRecord, index: int, outputs: dict[int, int], where: str) -> list[int]:
    """Darknet indices of a layer's inputs from its `.f` (-1 = the layer before; -1 before layer 0 = image)."""
    origin = record.attrs.get("f", -1)
    references = origin if isinstance(origin, (list, tuple)) else [origin]
    sources = []
    for reference in references:
        if not _is_int(reference):
            raise LayerError(f"{where}: from={show(origin)} is not a layer index")
        absolute = index + reference if reference < 0 else reference
        if absolute == -1:
            sources.append(-1)
        elif absolute in outputs:
            sources.append(outputs[absolute])
        else:
            raise LayerError(f"{where}: from={show(origin)} refers to layer {absolute}, not an earlier layer")
    return sources


def _strides(root: ModuleRecord, head: ModuleRecord, where: str) -> np.ndarray:
    """The Detect levels' strides: whole numbers from 1 to MAX_STRIDE."""
    for owner in (head, root):
        value = owner.attrs.get("stride")
        if isinstance(value, np.ndarray) and value.size:
            strides = value.reshape(-1)
            if not (np.isfinite(strides).all() and (strides >= 1).all() and (strides <= MAX_STRIDE).all()
                    and (strides == np.round(strides)).all()):
                raise LayerError(f"{where}: strides {show(strides.tolist())}, where YOLOv5 has whole numbers from 1 "
                                 f"to {MAX_STRIDE} (8, 16, 32)")
            return strides
    raise LayerError(f"{where}: no strides stored in the model")


def class_names(root: ModuleRecord, classes: int) -> list[str]:
    """The model's class names (dict or list), or class_<i> where they are missing; control characters
    (ANSI escapes) written as escapes, since names are printed and drawn."""
    names = root.attrs.get("names")
    if isinstance(names, dict):
        names = [names.get(i, names.get(str(i))) for i in range(classes)]
    if not isinstance(names, (list, tuple)) or len(names) != classes or not all(isinstance(n, str) for n in names):
        return [f"class_{i}" for i in range(classes)]
    return [printable(" ".join(name.split())) or f"class_{i}" for i, name in enumerate(names)]


def _uses_hardswish(record: ModuleRecord) -> bool:
    return record.kind == "Hardswish" or any(_uses_hardswish(child) for child in record.children.values())


SINGLE_INPUT = {
    "Conv": lambda out, record, source, where: out.conv_block(record, source, where),
    "Focus": focus,
    **{kind: c3 for kind in C3_KINDS},
    "BottleneckCSP": bottleneck_csp,
    **{kind: spp for kind in SPP_KINDS},
    **{kind: sppf for kind in SPPF_KINDS},
    "Upsample": upsample,
}
SUPPORTED = (*SINGLE_INPUT, "Concat", "Detect")


def _header(root: ModuleRecord, source_name: str, dialect: str) -> str:
    note = ("darknet form (Darknet and OpenCV load it)" if dialect == "darknet" else
            "pruneyolo's yolov5 dialect (Hardswish has no darknet activation)")
    return (f"# imported by pruneyolo {__version__} from {printable(source_name)} ({root.kind}); {note}.\n"
            "# Every width comes from the checkpoint's tensors.\n")


def net_section(size: tuple[int, int], strides) -> str:
    """The `[net]` block for an input `size` that every head's stride divides (one line otherwise)."""
    if strides is None:
        raise LayerError("no Detect layer: nothing to detect with")
    width, height = size
    largest = int(max(strides))
    if width % largest or height % largest:
        raise LayerError(f"input size {width}x{height} must be a multiple of the largest stride {largest} in both "
                         f"dimensions (e.g. --size {max(largest, width // largest * largest)}x"
                         f"{max(largest, height // largest * largest)})")
    return f"[net]\nwidth={width}\nheight={height}\nchannels=3"


def to_darknet(root: ModuleRecord, size: tuple[int, int] = DEFAULT_SIZE, source_name: str = "") -> Imported:
    """The Darknet cfg text and weights of a YOLOv5 model record at `size` (width, height)."""
    if root.kind not in ROOTS:
        raise LayerError(f"the model is a {root.kind}; pruneyolo imports {', '.join(ROOTS)}")
    layers = root.child("model")
    if layers is None or not layers.children:
        raise LayerError(f"the {root.kind} has no .model layers")
    dialect = "yolov5" if _uses_hardswish(root) else "darknet"
    out = Emitter(3, dialect)
    outputs: dict[int, int] = {}
    strides: np.ndarray | None = None
    classes = 0
    for index, record in enumerate(layers.children.values()):
        where = f"layer {index} ({record.kind})"
        if record.kind not in SUPPORTED:
            raise LayerError(f"{where}: {record.kind} is not a YOLOv5 layer pruneyolo can import (supported: "
                             f"{', '.join(sorted(set(SUPPORTED)))})")
        sources = _layer_sources(record, index, outputs, where)
        out.comment = f"YOLOv5 layer {index}: {record.kind}"
        if record.kind == "Concat":
            outputs[index] = concat(out, record, sources, where)
        elif record.kind == "Detect":
            strides, classes = _strides(root, record, where), whole(record.attrs.get("nc"), "nc", where, 1, MAX_CLASSES)
            outputs[index] = detect(out, record, sources, strides, where)
        elif len(sources) != 1:
            raise LayerError(f"{where}: takes one input, but from={show(record.attrs.get('f'))}")
        else:
            outputs[index] = SINGLE_INPUT[record.kind](out, record, sources[0], where)
    net = net_section(size, strides)
    text = _header(root, source_name, dialect) + "\n" + "\n\n".join([net, *out.blocks]) + "\n"
    return Imported(text, DarknetWeights(0, 2, 5, 0, out.weights), class_names(root, classes), dialect,
                    tuple(int(s) for s in strides))

