"""Darknet cfg sections -> one typed, shape-checked graph with params and BFLOPs (darknet's own rules)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pruneyolo.activations import canonical_activation
from pruneyolo.darknet.cfg import Options, Section, read_cfg
from pruneyolo.errors import CfgError

Shape = tuple[int, int, int]  # (channels, height, width)

DIALECTS = ("darknet", "yolov5")
YOLOV5_SECTIONS = {"focus", "convolutional_nobias", "convolutional_noconv"}
YOLOV5_ACTIVATIONS = {"silu", "hardswish"}
ATOF_PREFIX = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # the number C's atof reads at the start
MAX_REG_MAX = 64  # DFL bins per box side; Ultralytics uses 16

# Keys that only matter to training (or to darknet's own bookkeeping); read nowhere, warned about never.
TRAINING_KEYS = {
    "jitter", "ignore_thresh", "truth_thresh", "random", "cls_normalizer", "iou_normalizer", "iou_loss",
    "nms_kind", "beta_nms", "iou_thresh", "max_delta", "objectness_smooth", "obj_normalizer", "resize",
    "stopbackward", "uc_normalizer", "ema_alpha", "beta1", "thresh", "rescore", "object_scale",
    "noobject_scale", "coord_scale", "class_scale", "bias_match", "absolute", "counters_per_class",
    "label_smooth_eps", "focal_loss", "dontloadscales", "dontload", "learning_rate_scale", "flipped",
    "old_filters", "remain", "train_only_bn", "delta_normalizer", "map", "embedding_layer", "track_history_size",
    "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm", "show_details", "antialiasing",
    "probability", "dropblock", "dropblock_size_abs", "dropblock_size_rel", "max_boxes",
}
BINARISING_KEYS = ("xnor", "binary")  # darknet's XNOR-net convs: sign(x) * mean|x| inputs and/or kernels


class Flow(Enum):
    """How a node's output channels come from its inputs' channels."""

    PASSES = "passes through"  # output channel k is input channel k on its own (Node.pass_constant)
    CONCATENATES = "concatenates"  # the inputs' channels (with groups: each one's group slice) side by side
    ADDS = "adds"  # the inputs added over the channels they share, in inputs[0]'s order
    CONSUMES = "consumes"  # every input channel mixed into channels of its own: a conv, what pruning cuts
    OPAQUE = "opaque"  # needs every input channel; its outputs are no conv's channels


@dataclass(frozen=True)
class Node:
    """A layer: its index, source line, absolute input indices (-1 = the image) and output shape.

    A node type declares what every later stage needs to know about it as class attributes: its `kind`
    (summary type, module names), channel `flow` (pruning; OPAQUE, a barrier, unless declared), whether it is
    `pass_through` at inference (no module: its output is its first input), and its PyTorch `layer` (a class
    name in pruneyolo.nn.layers or a module class of its own) built from `layer_args()`."""

    index: int
    line: int
    inputs: tuple[int, ...]
    out_shape: Shape

    kind = "node"
    flow = Flow.OPAQUE
    pass_through = False
    layer = None

    def layer_args(self) -> list:
        """The PyTorch layer's constructor arguments, in order (an `activation` one by its canonical name)."""
        return []

    def describe(self) -> tuple[str, str, str]:
        """The summary's type, filters and size/stride-or-inputs columns."""
        if self.flow in (Flow.CONCATENATES, Flow.ADDS):  # a join: its inputs are what to show
            return self.kind, "", " ".join(str(i) for i in self.inputs)
        return self.kind, "", ""

    def codegen_note(self, inputs: str) -> str:
        """The generated forward's comment for a pass-through node reading `inputs`."""
        return f"# layer {self.index}: [{self.kind}] passes {inputs} through"

    @property
    def params(self) -> int:
        return 0

    @property
    def bflops(self) -> float:
        return 0.0

    @property
    def out_channels(self) -> int:
        return self.out_shape[0]

    def pass_constant(self, values):
        """A pass-through node's output channels where its input channels are constant maps of `values`."""
        return values


def _stride_text(node) -> str:
    """A conv's or pool's stride for the summary: one number, or `XxY` when they differ."""
    return str(node.stride_y) if node.stride_y == node.stride_x else f"{node.stride_x}x{node.stride_y}"


@dataclass(frozen=True)
class Conv(Node):
    """Convolution + optional BatchNorm + activation; yolov5's nobias/noconv variants are flags."""

    in_shape: Shape
    filters: int
    size: int
    stride_y: int
    stride_x: int
    padding: int
    groups: int
    dilation: int
    batch_normalize: bool
    activation: str
    has_conv: bool = True
    has_bias: bool = True
    share: int | None = None  # share_index=: the conv whose arrays this one uses (none of its own in .weights)

    kind = "conv"
    flow = Flow.CONSUMES
    layer = "ConvBlock"

    def layer_args(self) -> list:
        return [self.in_channels, self.filters, self.size, (self.stride_y, self.stride_x), self.padding,
                self.groups, self.dilation, self.batch_normalize, self.activation, self.has_conv, self.has_bias]

    def describe(self) -> tuple[str, str, str]:
        if not self.has_conv:
            return "bn_act", f"{self.filters}", ""
        group = f"/{self.groups}" if self.groups > 1 else ""
        dilation = f"({self.dilation})" if self.dilation > 1 else ""
        kind = "convS" if self.share is not None else "conv"
        return kind, f"{self.filters}{group}", f"{self.size}x{self.size}/{_stride_text(self)}{dilation}"

    @property
    def in_channels(self) -> int:
        return self.in_shape[0]

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.filters, self.in_channels // self.groups, self.size, self.size)

    @property
    def n_weights(self) -> int:
        return math.prod(self.weight_shape) if self.has_conv else 0

    @property
    def params(self) -> int:
        if self.share is not None:
            return 0
        return self.n_weights + self.filters * (int(self.has_bias) + int(self.batch_normalize))

    @property
    def bflops(self) -> float:
        return 2.0 * self.n_weights * self.out_shape[1] * self.out_shape[2] / 1e9


@dataclass(frozen=True)
class MaxPool(Node):
    """Max pooling; darknet pads `padding` in total (padding // 2 before), out-of-range = -inf."""

    size: int
    stride_y: int
    stride_x: int
    padding: int
    pads: tuple[int, int, int, int]  # (left, right, top, bottom) that reproduce darknet's windows exactly

    kind = "maxpool"
    flow = Flow.PASSES
    layer = "MaxPool"

    def layer_args(self) -> list:
        return [self.size, (self.stride_y, self.stride_x), self.pads]

    def describe(self) -> tuple[str, str, str]:
        return "max", "", f"{self.size}x{self.size}/{_stride_text(self)}"

    @property
    def bflops(self) -> float:
        channels, height, width = self.out_shape
        return self.size * self.size * channels * height * width / 1e9


@dataclass(frozen=True)
class AvgPool(Node):
    """Global average pooling to C x 1 x 1."""

    kind = "avgpool"
    layer = "GlobalAvgPool"


@dataclass(frozen=True)
class Upsample(Node):
    """Nearest-neighbour upsampling by an integer stride, values multiplied by `scale`."""

    stride: int
    scale: float

    kind = "upsample"
    flow = Flow.PASSES
    layer = "Upsample"

    def layer_args(self) -> list:
        return [self.stride, self.scale]

    def describe(self) -> tuple[str, str, str]:
        return "upsample", "", f"{self.stride}x"

    def pass_constant(self, values):
        return values * self.scale


@dataclass(frozen=True)
class Reorg(Node):
    """Space-to-depth. `mode`: 'darknet_old' ([reorg], yolov2's memory reshuffle), 'darknet' ([reorg3d]),
    'focus' (yolov5's [focus] channel order)."""

    stride: int
    mode: str

    kind = "reorg"
    layer = "Reorg"

    def layer_args(self) -> list:
        return [self.stride, self.mode]

    def describe(self) -> tuple[str, str, str]:
        return f"reorg/{self.mode}", "", f"/{self.stride}"


@dataclass(frozen=True)
class Route(Node):
    """Concatenate inputs along channels; with groups, each input contributes slice `group_id` of `groups`."""

    groups: int
    group_id: int

    kind = "route"
    flow = Flow.CONCATENATES
    layer = "Route"

    def layer_args(self) -> list:
        return [self.groups, self.group_id]

    def describe(self) -> tuple[str, str, str]:
        if self.groups == 1:
            return super().describe()
        return self.kind, "", " ".join(str(i) for i in self.inputs) + f" (group {self.group_id}/{self.groups})"


@dataclass(frozen=True)
class Shortcut(Node):
    """Residual add of inputs[0] (previous layer) and inputs[1:], over the channels they share; then activation."""

    activation: str

    kind = "shortcut"
    flow = Flow.ADDS
    layer = "Shortcut"

    def layer_args(self) -> list:
        return [self.activation]

    @property
    def bflops(self) -> float:
        channels, height, width = self.out_shape
        return channels * height * width * (len(self.inputs) - 1) / 1e9


@dataclass(frozen=True)
class ScaleChannels(Node):
    """inputs[1] (C x H x W) multiplied per channel by inputs[0] (C x 1 x 1), as in squeeze-excitation."""

    kind = "scale_channels"
    layer = "ScaleChannels"


@dataclass(frozen=True)
class Sam(Node):
    """Spatial attention: element-wise product of inputs[0] and inputs[1]."""

    kind = "sam"
    layer = "Sam"


@dataclass(frozen=True)
class Identity(Node):
    """Layers that do nothing at inference ([dropout])."""

    kind = "identity"
    flow = Flow.PASSES
    pass_through = True

    def codegen_note(self, inputs: str) -> str:
        return f"# layer {self.index}: [dropout], identity at inference"


@dataclass(frozen=True)
class Yolo(Node):
    """A detection head over the previous layer's output (raw A*(5+C) channels)."""

    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]
    classes: int
    scale_x_y: float
    new_coords: bool
    stride: int
    decode: str  # 'darknet', 'new_coords', 'yolov5', 'region' (yolov2; anchors in grid cells, softmax), 'dfl'
    reg_max: int = 0  # 'dfl': bins per box side

    kind = "yolo"
    pass_through = True  # the raw head tensor is the model's output; decoding is the export's choice

    def describe(self) -> tuple[str, str, str]:
        return self.decode if self.decode == "region" else self.kind, "", f"stride {self.stride}"

    def codegen_note(self, inputs: str) -> str:
        return f"# layer {self.index}: [{self.kind}] head on {inputs}, stride {self.stride}"

    @property
    def head_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[m] for m in self.mask)

    @property
    def pixel_anchors(self) -> list[list[float]]:
        """The head's anchors in input pixels (region (yolov2) anchors are given in grid cells)."""
        unit = self.stride if self.decode == "region" else 1
        return [[w * unit, h * unit] for w, h in self.head_anchors]


@dataclass(frozen=True)
class Detect(Yolo):
    """An anchor-free head (YOLOv8/YOLO11): per cell 4 x reg_max box-side distance bins (DFL) then class logits.

    Its one "anchor" is (stride, stride): the distances are in grid cells, so a box side is distance x stride.
    """

    kind = "detect"


@dataclass(frozen=True)
class Attention(Node):
    """Multi-head self-attention over all positions (YOLO11's C2PSA). The input holds every head's queries,
    then every head's keys (key_dim each), then every head's values (head_dim each); out: the values mixed."""

    heads: int
    key_dim: int
    head_dim: int

    kind = "attention"
    layer = "Attention"

    def layer_args(self) -> list:
        return [self.heads, self.key_dim]

    def describe(self) -> tuple[str, str, str]:
        return self.kind, f"{self.heads}x{self.head_dim}", f"key {self.key_dim}"

    @property
    def bflops(self) -> float:
        _, height, width = self.out_shape
        positions = height * width
        return 2.0 * self.heads * positions * positions * (self.key_dim + self.head_dim) / 1e9


def channel_flow(node: Node) -> Flow:
    """A node's declared channel flow (OPAQUE when its type declares none)."""
    return type(node).flow


@dataclass(frozen=True)
class Graph:
    """The whole network: input shape, nodes in cfg order, dialect and the sections it came from."""

    path: str
    input_shape: Shape
    nodes: tuple[Node, ...]
    dialect: str
    sections: tuple[Section, ...] = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()
    source_sha256: str = field(default="", compare=False)  # of the file read, if known (else hashed on demand)

    @property
    def size(self) -> tuple[int, int]:
        """The input's (width, height)."""
        return self.input_shape[2], self.input_shape[1]

    def shape_into(self, node: Node) -> Shape:
        """The shape of a node's first input (the image's for the first layer)."""
        source = node.inputs[0] if node.inputs else -1
        return self.input_shape if source < 0 else self.nodes[source].out_shape

    def sized_sections(self) -> list[Section]:
        """Copies of the cfg sections with [net] set to the graph's input size, for a reader that builds at the
        cfg's own size (OpenCV)."""
        sections = copy.deepcopy(list(self.sections))
        sections[0].set("width", self.input_shape[2])
        sections[0].set("height", self.input_shape[1])
        return sections

    @property
    def heads(self) -> list[Yolo]:
        return [node for node in self.nodes if isinstance(node, Yolo)]

    @property
    def convs(self) -> list[Conv]:
        return [node for node in self.nodes if isinstance(node, Conv)]

    @property
    def weighted_convs(self) -> list[Conv]:
        """The convs with arrays of their own in a .weights file (not share_index ones), in file order."""
        return [conv for conv in self.convs if conv.share is None]

    @property
    def params(self) -> int:
        return sum(node.params for node in self.nodes)

    @property
    def bflops(self) -> float:
        return sum(node.bflops for node in self.nodes)

    @property
    def cfg_sha256(self) -> str:
        if self.source_sha256:
            return self.source_sha256
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest() if Path(self.path).is_file() else ""

    def consumers(self) -> dict[int, list[int]]:
        """For each node index, the indices of nodes that read its output."""
        users: dict[int, list[int]] = {node.index: [] for node in self.nodes}
        for node in self.nodes:
            for source in node.inputs:
                if source >= 0:
                    users[source].append(node.index)
        return users


@dataclass
class _Context:
    """What a section parser may look at: earlier shapes, its own index, the input and the dialect."""

    index: int
    shapes: list[Shape]
    input_shape: Shape
    dialect: str
    section: Section
    nodes: list[Node] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def previous(self) -> int:
        return self.index - 1

    def warn(self, opts: Options, key: str, message: str) -> None:
        """Record one line about a leniency (something darknet accepts that a stricter reading would not)."""
        entry = opts.section.entries.get(key)
        line = entry.line if entry else opts.section.line
        self.warnings.append(f"{opts.section.path}:{line}: [{opts.section.name}] {message}")

    def shape_of(self, index: int) -> Shape:
        return self.input_shape if index < 0 else self.shapes[index]

    def resolve(self, opts: Options, key: str, reference: int) -> int:
        """An absolute layer index from a cfg reference (negative = relative to this layer)."""
        absolute = self.index + reference if reference < 0 else reference
        if not 0 <= absolute < self.index:
            raise opts.error(
                f"{key} refers to layer {reference} (absolute {absolute}), but only layers 0..{self.index - 1} "
                "come before this one", key)
        return absolute


SectionParser = Callable[[Options, _Context], Node]


@dataclass(frozen=True)
class SectionType:
    """How a section is read: its parser, the keys holding layer references (renumbered when layers are
    removed), and whether it may be the first layer (one that needs earlier layers may not)."""

    parse: SectionParser
    references: tuple[str, ...] = ()
    may_be_first: bool = True


SECTIONS: dict[str, SectionType] = {}


def section(*names: str, references: tuple[str, ...] = (), may_be_first: bool = True):
    """Register a parser for one section type and its aliases (the node type it returns declares the rest)."""

    def register(parser: SectionParser) -> SectionParser:
        for name in names:
            SECTIONS[name] = SectionType(parser, references, may_be_first)
        return parser

    return register


def _activation(opts: Options, default: str) -> str:
    name = opts.str("activation", default)
    canonical = canonical_activation(name)
    if canonical is None:
        raise opts.error(f"unknown activation {name!r}", "activation")
    return canonical


def _positive(opts: Options, key: str, value: int) -> int:
    if value < 1:
        raise opts.error(f"{key}={value} must be >= 1", key)
    return value


def _conv_out(size: int, extent: int, padding: int, stride: int) -> int:
    return (extent + 2 * padding - size) // stride + 1


def _conv_stride(opts: Options, ctx: _Context, key: str, stride: int) -> int:
    """stride_x or stride_y; like darknet, a missing or non-positive one falls back to `stride`."""
    value = opts.int(key, stride)
    if value < 1:
        ctx.warn(opts, key, f"{key}={value} is not a stride: stride={stride} is used, as darknet does")
        return stride
    return value


def _dilated_padding(opts: Options, ctx: _Context, size: int, padding: int, dilation: int) -> int:
    """Darknet pads `padding * dilation` but sizes the output as if undilated: both agree only for
    padding = (size - 1) / 2, which keeps the input size at stride 1."""
    if 2 * padding != size - 1:
        raise opts.error(f"dilation={dilation} with size={size} and padding {padding}: darknet's output size and "
                         "its dilated convolution agree only for an odd size with pad=1 (or padding=size/2)",
                         "dilation")
    ctx.warn(opts, "dilation", f"dilation={dilation}: padded {padding}x{dilation} per side as darknet pads, keeping "
             "darknet's output size; OpenCV's Darknet importer ignores dilation")
    return padding * dilation


def _make_conv(opts: Options, ctx: _Context, *, has_conv=True, has_bias=True, batch_normalize=None) -> Conv:
    for key in BINARISING_KEYS:
        if opts.int(key, 0):
            raise opts.error(f"{key}={opts.int(key)}: darknet's binarised (XNOR-net) convolution is not supported, "
                             "and a float conv in its place would be a different model", key)
    in_shape = ctx.shape_of(ctx.previous)
    filters = _positive(opts, "filters", opts.int("filters"))
    if not has_conv:
        if filters != in_shape[0]:
            raise opts.error(f"filters={filters} must equal its input's {in_shape[0]} channels", "filters")
        return Conv(ctx.index, ctx.section.line, (ctx.previous,), in_shape, in_shape, filters, 1, 1, 1, 0, 1, 1,
                    True, "leaky", has_conv=False, has_bias=True)
    size = _positive(opts, "size", opts.int("size", 1))
    stride = _positive(opts, "stride", opts.int("stride", 1))
    stride_y = _conv_stride(opts, ctx, "stride_y", stride)
    stride_x = _conv_stride(opts, ctx, "stride_x", stride)
    dilation = _positive(opts, "dilation", opts.int("dilation", 1))
    groups = _positive(opts, "groups", opts.int("groups", 1))
    padding = opts.int("padding", 0)
    if opts.int("pad", 0):
        padding = (size - 1) // 2 if ctx.dialect == "yolov5" else size // 2
    if padding < 0:
        raise opts.error(f"padding={padding} must be >= 0", "padding")
    if dilation > 1 and size == 1:
        ctx.warn(opts, "dilation", f"dilation={dilation} on a 1x1 conv does nothing; darknet sets it to 1")
        dilation = 1
    if dilation > 1:
        padding = _dilated_padding(opts, ctx, size, padding, dilation)
    if in_shape[0] % groups or filters % groups:
        raise opts.error(f"groups={groups} must divide input channels ({in_shape[0]}) and filters ({filters})",
                         "groups")
    if batch_normalize is None:
        batch_normalize = bool(opts.int("batch_normalize", 0))
    activation = _activation(opts, "logistic") if has_bias else "linear"
    kernel = dilation * (size - 1) + 1
    height = _conv_out(kernel, in_shape[1], padding, stride_y)
    width = _conv_out(kernel, in_shape[2], padding, stride_x)
    if height < 1 or width < 1:
        raise opts.error(f"a {size}x{size} kernel does not fit its {in_shape[1]}x{in_shape[2]} input", "size")
    return Conv(ctx.index, ctx.section.line, (ctx.previous,), (filters, height, width), in_shape, filters, size,
                stride_y, stride_x, padding, groups, dilation, batch_normalize, activation,
                has_conv=True, has_bias=has_bias)


def _share(opts: Options, ctx: _Context, conv: Conv) -> Conv:
    """share_index=L: the conv runs with layer L's kernel, biases and BatchNorm (darknet's share_layer)."""
    target = ctx.nodes[ctx.resolve(opts, "share_index", opts.int("share_index"))]
    if not isinstance(target, Conv) or not (target.has_conv and target.has_bias):
        raise opts.error(f"share_index: layer {target.index} is a [{target.kind}], not a [convolutional]",
                         "share_index")
    differences = [f"{name} {mine} vs {theirs}" for name, mine, theirs in (
        ("size", conv.size, target.size), ("input channels", conv.in_channels, target.in_channels),
        ("filters", conv.filters, target.filters), ("groups", conv.groups, target.groups),
        ("batch_normalize", int(conv.batch_normalize), int(target.batch_normalize))) if mine != theirs]
    if differences:
        raise opts.error(f"share_index: layer {target.index} has other arrays ({', '.join(differences)}); "
                         "a shared conv needs the same ones", "share_index")
    owner = target.index if target.share is None else target.share
    ctx.warn(opts, "share_index", f"share_index: layer {conv.index} uses layer {owner}'s weights and has none in "
             "the .weights file; OpenCV's Darknet importer does not share them")
    return dataclasses.replace(conv, share=owner)


@section("convolutional", "conv")
def parse_convolutional(opts: Options, ctx: _Context) -> Node:
    conv = _make_conv(opts, ctx)
    return _share(opts, ctx, conv) if opts.has("share_index") else conv


@section("convolutional_nobias")
def parse_convolutional_nobias(opts: Options, ctx: _Context) -> Node:
    """yolov5-as-cfg: a plain convolution with neither bias nor BatchNorm nor activation."""
    return _make_conv(opts, ctx, has_bias=False, batch_normalize=False)


@section("convolutional_noconv")
def parse_convolutional_noconv(opts: Options, ctx: _Context) -> Node:
    """yolov5-as-cfg: BatchNorm + leaky over the input, no convolution."""
    return _make_conv(opts, ctx, has_conv=False)


@section("maxpool", "max")
def parse_maxpool(opts: Options, ctx: _Context) -> Node:
    channels, in_h, in_w = ctx.shape_of(ctx.previous)
    stride = _positive(opts, "stride", opts.int("stride", 1))  # darknet's defaults: stride 1, size = stride
    size = _positive(opts, "size", opts.int("size", stride))
    stride_y = _positive(opts, "stride_y", opts.int("stride_y", stride))
    stride_x = _positive(opts, "stride_x", opts.int("stride_x", stride))
    padding = opts.int("padding", size - 1)
    if padding < 0:
        raise opts.error(f"padding={padding} must be >= 0", "padding")
    if opts.int("maxpool_depth", 0):
        raise opts.error("maxpool_depth=1 (channel-wise max) is not supported", "maxpool_depth")
    height = (in_h + padding - size) // stride_y + 1
    width = (in_w + padding - size) // stride_x + 1
    if height < 1 or width < 1:
        raise opts.error(f"a {size}x{size} pool does not fit its {in_h}x{in_w} input", "size")
    before = padding // 2
    pads = (before, max(0, (width - 1) * stride_x + size - in_w - before),
            before, max(0, (height - 1) * stride_y + size - in_h - before))
    return MaxPool(ctx.index, ctx.section.line, (ctx.previous,), (channels, height, width),
                   size, stride_y, stride_x, padding, pads)


@section("avgpool", "avg")
def parse_avgpool(opts: Options, ctx: _Context) -> Node:
    channels = ctx.shape_of(ctx.previous)[0]
    return AvgPool(ctx.index, ctx.section.line, (ctx.previous,), (channels, 1, 1))


@section("upsample")
def parse_upsample(opts: Options, ctx: _Context) -> Node:
    channels, height, width = ctx.shape_of(ctx.previous)
    stride = opts.int("stride", 2)
    if stride < 1:
        raise opts.error(f"stride={stride}: only positive (upsampling) strides are supported", "stride")
    scale = opts.float("scale", 1.0)
    return Upsample(ctx.index, ctx.section.line, (ctx.previous,), (channels, height * stride, width * stride),
                    stride, scale)


def _space_to_depth(opts: Options, ctx: _Context, stride: int, mode: str) -> Node:
    channels, height, width = ctx.shape_of(ctx.previous)
    if opts.int("reverse", 0):
        raise opts.error("reverse=1 (depth-to-space) is not supported", "reverse")
    if height % stride or width % stride:
        raise opts.error(f"stride={stride} must divide the input size {height}x{width}", "stride")
    if mode == "darknet_old" and channels % (stride * stride):
        raise opts.error(f"[reorg] needs input channels ({channels}) divisible by stride^2", "stride")
    out_shape = (channels * stride * stride, height // stride, width // stride)
    return Reorg(ctx.index, ctx.section.line, (ctx.previous,), out_shape, stride, mode)


@section("reorg")
def parse_reorg(opts: Options, ctx: _Context) -> Node:
    return _space_to_depth(opts, ctx, _positive(opts, "stride", opts.int("stride", 1)), "darknet_old")


@section("reorg3d")
def parse_reorg3d(opts: Options, ctx: _Context) -> Node:
    return _space_to_depth(opts, ctx, _positive(opts, "stride", opts.int("stride", 1)), "darknet")


@section("focus")
def parse_focus(opts: Options, ctx: _Context) -> Node:
    node = _space_to_depth(opts, ctx, 2, "focus")
    filters = opts.int("filters", node.out_channels)
    if filters != node.out_channels:
        raise opts.error(f"filters={filters} but focus of {node.out_channels // 4} channels gives "
                         f"{node.out_channels}", "filters")
    return node


@section("route", references=("layers",), may_be_first=False)
def parse_route(opts: Options, ctx: _Context) -> Node:
    references = opts.ints("layers")
    if not references:
        raise opts.error("layers= is empty", "layers")
    inputs = tuple(ctx.resolve(opts, "layers", ref) for ref in references)
    groups = _positive(opts, "groups", opts.int("groups", 1))
    group_id = opts.int("group_id", 0)
    if not 0 <= group_id < groups:
        raise opts.error(f"group_id={group_id} must be in 0..{groups - 1}", "group_id")
    shapes = [ctx.shape_of(i) for i in inputs]
    if len({shape[1:] for shape in shapes}) > 1:
        sizes = ", ".join(f"layer {i}: {s[1]}x{s[2]}" for i, s in zip(inputs, shapes, strict=True))
        raise opts.error(f"route inputs differ in spatial size ({sizes})", "layers")
    for i, shape in zip(inputs, shapes, strict=True):
        if shape[0] % groups:
            raise opts.error(f"groups={groups} does not divide layer {i}'s {shape[0]} channels", "groups")
    channels = sum(shape[0] // groups for shape in shapes)
    return Route(ctx.index, ctx.section.line, inputs, (channels, *shapes[0][1:]), groups, group_id)


@section("shortcut", references=("from",), may_be_first=False)
def parse_shortcut(opts: Options, ctx: _Context) -> Node:
    sources = tuple(ctx.resolve(opts, "from", ref) for ref in opts.ints("from"))
    if not sources:
        raise opts.error("from= is empty", "from")
    if opts.str("weights_type", "none") != "none":
        raise opts.error("weighted shortcuts (weights_type=) are not supported", "weights_type")
    out_shape = ctx.shape_of(ctx.previous)
    for source in sources:
        if ctx.shape_of(source)[1:] != out_shape[1:]:
            other = ctx.shape_of(source)
            raise opts.error(f"shortcut from layer {source} ({other[1]}x{other[2]}) to a {out_shape[1]}x"
                             f"{out_shape[2]} input: spatial sizes must match", "from")
    return Shortcut(ctx.index, ctx.section.line, (ctx.previous, *sources), out_shape, _activation(opts, "linear"))


@section("scale_channels", references=("from",), may_be_first=False)
def parse_scale_channels(opts: Options, ctx: _Context) -> Node:
    source = ctx.resolve(opts, "from", opts.int("from"))
    if opts.int("scale_wh", 0):
        raise opts.error("scale_wh=1 is not supported", "scale_wh")
    scale_shape, out_shape = ctx.shape_of(ctx.previous), ctx.shape_of(source)
    if scale_shape != (out_shape[0], 1, 1):
        raise opts.error(f"scale_channels needs a {out_shape[0]}x1x1 previous layer, got "
                         f"{'x'.join(map(str, scale_shape))}", "from")
    return ScaleChannels(ctx.index, ctx.section.line, (ctx.previous, source), out_shape)


@section("sam", references=("from",), may_be_first=False)
def parse_sam(opts: Options, ctx: _Context) -> Node:
    source = ctx.resolve(opts, "from", opts.int("from"))
    if ctx.shape_of(source) != ctx.shape_of(ctx.previous):
        raise opts.error("sam needs its from= layer and the previous layer to have the same shape", "from")
    return Sam(ctx.index, ctx.section.line, (ctx.previous, source), ctx.shape_of(source))


@section("dropout")
def parse_dropout(opts: Options, ctx: _Context) -> Node:
    return Identity(ctx.index, ctx.section.line, (ctx.previous,), ctx.shape_of(ctx.previous))


def _anchors(opts: Options, ctx: _Context) -> tuple[tuple[tuple[float, float], ...], int]:
    """(anchor pairs, num) as darknet reads them: the first `num` pairs; extra values are ignored."""
    values = _atof_list(opts, ctx, "anchors")
    if not values:
        raise opts.error("anchors= is missing", "anchors")
    num = _positive(opts, "num", opts.int("num", len(values) // 2 or 1))
    if len(values) > 2 * num:
        ctx.warn(opts, "anchors", f"anchors= lists {len(values)} numbers for num={num}: the first {2 * num} are "
                 "used and the rest ignored, as darknet does")
        values = values[:2 * num]
    return tuple((values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)), num


def _atof_list(opts: Options, ctx: _Context, key: str) -> list[float]:
    """Comma-separated numbers read as darknet's atof reads each: a part with junk after its leading number (a
    missing comma: '45    61') is that number, with a warning."""
    values = []
    for part in opts.str(key, "").split(","):
        if not part.strip():
            continue
        leading = ATOF_PREFIX.match(part)
        if not leading or not math.isfinite(float(leading.group())):
            raise opts.error(f"{key}= part {part.strip()!r} is not a finite number", key)
        if leading.end() < len(part.rstrip()):
            ctx.warn(opts, key, f"{key}= part {part.strip()!r} is read as {leading.group().strip()}, as darknet's "
                     "atof reads it (the rest ignored): is a comma missing?")
        values.append(float(leading.group()))
    return values


def _check_mask(opts: Options, ctx: _Context, mask: tuple[int, ...], anchors: tuple, num: int) -> None:
    """Every mask index must be below num and have a whole anchor pair; fewer pairs than num is fine then."""
    for m in mask:
        if not 0 <= m < num:
            raise opts.error(f"mask index {m} is beyond num={num} (indices 0..{num - 1}: darknet uses the first num "
                             "anchor pairs); raise num= or fix mask=", "num" if opts.has("num") else "mask")
    for m in mask:
        if m >= len(anchors):
            raise opts.error(f"mask index {m} has no anchor: anchors= gives {len(anchors)} whole width,height "
                             f"pairs (indices 0..{len(anchors) - 1}) for num={num}; add the missing pairs",
                             "anchors")
    if len(anchors) < num:
        ctx.warn(opts, "anchors", f"anchors= gives {len(anchors)} pairs for num={num}: accepted as darknet does, "
                 f"since every mask index ({', '.join(map(str, mask))}) has one")


def _head(opts: Options, ctx: _Context, *, region: bool) -> Node:
    channels, height, width = ctx.shape_of(ctx.previous)
    classes = opts.int("classes", 20)
    if classes < 1:
        raise opts.error(f"classes={classes} must be >= 1", "classes")
    anchors, num = _anchors(opts, ctx)
    mask = tuple(opts.ints("mask", list(range(num))))
    _check_mask(opts, ctx, mask, anchors, num)
    if opts.has("from"):
        raise opts.error("[yolo] from= (ASFF fusion) is an extension with no darknet semantics", "from")
    scale_x_y = opts.float("scale_x_y", 1.0)
    new_coords = bool(opts.int("new_coords", 0))
    if region:
        if opts.int("coords", 4) != 4:
            raise opts.error("only coords=4 is supported", "coords")
        if not opts.int("softmax", 1):
            raise opts.error("softmax=0 (logistic class scores in [region]) is not supported", "softmax")
        decode = "region"
    elif ctx.dialect == "yolov5":
        decode = "yolov5"
    else:
        decode = "new_coords" if new_coords else "darknet"
    expected = len(mask) * (classes + 5)
    if channels != expected:
        raise opts.error(
            f"the layer before this head has {channels} filters; {len(mask)} anchors x (classes={classes} + 5) "
            f"needs {expected}", "classes")
    stride = round(ctx.input_shape[1] / height) if height else 0
    return Yolo(ctx.index, ctx.section.line, (ctx.previous,), (channels, height, width), mask, anchors, classes,
                scale_x_y, new_coords, stride, decode)


@section("yolo", may_be_first=False)
def parse_yolo(opts: Options, ctx: _Context) -> Node:
    return _head(opts, ctx, region=False)


@section("region", may_be_first=False)
def parse_region(opts: Options, ctx: _Context) -> Node:
    return _head(opts, ctx, region=True)


@section("detect", may_be_first=False)
def parse_detect(opts: Options, ctx: _Context) -> Node:
    """pruneyolo's anchor-free DFL head: the previous layer holds 4 x reg_max distance bins, then class logits."""
    channels, height, width = ctx.shape_of(ctx.previous)
    classes = _positive(opts, "classes", opts.int("classes"))
    reg_max = opts.int("reg_max", 16)
    if not 2 <= reg_max <= MAX_REG_MAX:
        raise opts.error(f"reg_max={reg_max} must be in 2..{MAX_REG_MAX}", "reg_max")
    if channels != 4 * reg_max + classes:
        raise opts.error(f"the layer before this head has {channels} channels; 4 x reg_max={reg_max} + "
                         f"classes={classes} needs {4 * reg_max + classes}", "classes")
    stride = round(ctx.input_shape[1] / height)
    if stride * height != ctx.input_shape[1] or stride * width != ctx.input_shape[2]:
        raise opts.error(f"its {height}x{width} grid does not divide the {ctx.input_shape[1]}x"
                         f"{ctx.input_shape[2]} input evenly", "classes")
    return Detect(ctx.index, ctx.section.line, (ctx.previous,), (channels, height, width), (0,),
                  ((float(stride), float(stride)),), classes, 1.0, False, stride, "dfl", reg_max)


@section("attention", may_be_first=False)
def parse_attention(opts: Options, ctx: _Context) -> Node:
    channels, height, width = ctx.shape_of(ctx.previous)
    heads = _positive(opts, "heads", opts.int("heads"))
    key_dim = _positive(opts, "key_dim", opts.int("key_dim"))
    values = channels - 2 * heads * key_dim
    if values < heads or values % heads:
        raise opts.error(f"{channels} input channels minus {heads} heads x 2 x key_dim={key_dim} leaves {values} "
                         f"value channels, not a positive multiple of heads={heads}", "heads")
    return Attention(ctx.index, ctx.section.line, (ctx.previous,), (values, height, width), heads, key_dim,
                     values // heads)


def detect_dialect(sections: list[Section]) -> str:
    """'yolov5' for yolov5-as-cfg files (their sections or PyTorch-style activations), else 'darknet'."""
    for sec in sections:
        if sec.name in YOLOV5_SECTIONS:
            return "yolov5"
        activation = sec.entries.get("activation")
        if activation and activation.value.strip().lower() in YOLOV5_ACTIVATIONS:
            return "yolov5"
    return "darknet"


def _parse_net(sections: list[Section], size: tuple[int, int] | None) -> Shape:
    net = sections[0]
    if net.name not in ("net", "network"):
        raise CfgError(net.path, net.line, f"the first section is [{net.name}]; a Darknet cfg starts with [net]")
    opts = net.options()
    width, height = size if size else (opts.int("width", 416), opts.int("height", 416))
    channels = opts.int("channels", 3)
    for key, value in (("width", width), ("height", height), ("channels", channels)):
        if value < 1:
            raise opts.error(f"{key}={value} must be >= 1", key)
    return (channels, height, width)


def build_graph(sections: list[Section], path: str = "<cfg>", size: tuple[int, int] | None = None,
                dialect: str | None = None) -> Graph:
    """Type and shape-check every section. `size` is (width, height) overriding [net]."""
    if not sections:
        raise CfgError(path, 1, "empty cfg: no [net] section and no layers")
    input_shape = _parse_net(sections, size)
    dialect = dialect or detect_dialect(sections)
    if dialect not in DIALECTS:
        raise CfgError(path, 1, f"unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    nodes: list[Node] = []
    shapes: list[Shape] = []
    warnings: list[str] = []
    for sec in sections[1:]:
        section_type = SECTIONS.get(sec.name)
        if section_type is None:
            if sec.name in ("net", "network"):
                raise CfgError(sec.path, sec.line, "a second [net] section: a cfg has exactly one, at the top")
            raise CfgError(sec.path, sec.line, f"unknown section [{sec.name}]: pruneyolo supports "
                           f"{', '.join(sorted(f'[{name}]' for name in SECTIONS))}")
        opts = sec.options()
        ctx = _Context(len(nodes), shapes, input_shape, dialect, sec, nodes, warnings)
        if ctx.index == 0 and not section_type.may_be_first:
            raise opts.error("cannot be the first layer: it needs earlier layers")
        node = section_type.parse(opts, ctx)
        for key in opts.unused():
            if key not in TRAINING_KEYS:
                warnings.append(f"{sec.path}:{sec.entries[key].line}: [{sec.name}] ignores unknown key '{key}'")
        nodes.append(node)
        shapes.append(node.out_shape)
    if not nodes:
        raise CfgError(path, sections[0].line, "the cfg has a [net] section but no layers")
    return Graph(path, input_shape, tuple(nodes), dialect, tuple(sections), tuple(warnings))


def load_graph(path, size: tuple[int, int] | None = None, dialect: str | None = None) -> Graph:
    """Read and type a cfg file."""
    return build_graph(read_cfg(path), str(path), size, dialect)
