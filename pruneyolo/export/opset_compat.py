"""Make an OpenVINO model readable by 2022.3 LTS (the last NCS2/MYRIAD release), which knows opset1..opset10.

`downgrade_for_2022` rewrites, in place, each newer op version into an older one computing the same thing:
MaxPool-14 -> MaxPool-1 (MaxPool-8 when dilated or its indices are used), AvgPool-14 -> AvgPool-1,
Pad-12 -> Pad-1, Interpolate-11 -> Interpolate-4, TopK-11 -> TopK-3.
"""

from collections.abc import Callable

import numpy as np
import openvino as ov
from openvino.utils.node_factory import NodeFactory

from pruneyolo.errors import PruneyoloError

KNOWN_OPSETS = frozenset(f"opset{n}" for n in range(1, 11))
PILLOW_MODES = ("bilinear_pillow", "bicubic_pillow")


class OpsetError(PruneyoloError):
    """A model op that OpenVINO 2022.3 cannot read and that has no equivalent rewrite."""


def op_version(node: ov.Node) -> str:
    """'Type-opsetN' of a node, as the IR writes it."""
    info = node.get_type_info()
    return f"{info.name}-{info.version_id}"


def unknown_to_2022(model: ov.Model) -> list[str]:
    """Sorted distinct 'Type-opsetN' of the ops in `model` that OpenVINO 2022.3 cannot read."""
    ops = model.get_ordered_ops()
    return sorted({op_version(op) for op in ops if op.get_type_info().version_id not in KNOWN_OPSETS})


def _fail(node: ov.Node, why: str) -> OpsetError:
    name = node.get_friendly_name()
    return OpsetError(f"{op_version(node)} '{name}' has no OpenVINO 2022.3 equivalent: {why}")


def _constant(node: ov.Node, index: int) -> np.ndarray:
    """The value of input `index` of `node`, which must come from a Constant."""
    source = node.input_value(index).get_node()
    if source.get_type_name() != "Constant":
        raise _fail(node, f"input {index} is not a constant")
    return source.get_data()


def _static_shape(node: ov.Node, output: ov.Output) -> list[int]:
    """The shape of `output`, which must be static."""
    shape = output.get_partial_shape()
    if not shape.is_static:
        raise _fail(node, f"shape {shape} is not static")
    return list(shape.to_shape())


def _pool(node: ov.Node, opset: str, attributes: dict) -> ov.Node:
    """Same pooling in `opset`; 'ceil_torch' becomes whichever of 'ceil'/'floor' gives the same shape."""
    want = _static_shape(node, node.output(0)) if attributes["rounding_type"] == "ceil_torch" else None
    for rounding in ("ceil", "floor") if want else (attributes["rounding_type"],):
        changed = attributes | {"rounding_type": rounding}
        new = NodeFactory(opset).create(node.get_type_name(), [node.input_value(0)], changed)
        if want is None or list(new.get_output_shape(0)) == want:
            return new
    raise _fail(node, "no rounding_type gives the same output shape")


def _maxpool(node: ov.Node) -> ov.Node:
    """MaxPool-14 -> MaxPool-1, or MaxPool-8 when dilated or its indices output is consumed."""
    attributes = node.get_attributes()
    if node.output(1).get_target_inputs() or any(d != 1 for d in attributes["dilations"]):
        return _pool(node, "opset8", attributes)
    kept = ("strides", "pads_begin", "pads_end", "kernel", "rounding_type", "auto_pad")
    return _pool(node, "opset1", {key: attributes[key] for key in kept})


def _avgpool(node: ov.Node) -> ov.Node:
    """AvgPool-14 -> AvgPool-1 (same attributes)."""
    return _pool(node, "opset1", node.get_attributes())


def _pad(node: ov.Node) -> ov.Node:
    """Pad-12 -> Pad-1, for constant non-negative pads only (Pad-1 cannot crop)."""
    for index in (1, 2):
        if (_constant(node, index) < 0).any():
            raise _fail(node, "negative pads")
    inputs = [node.input_value(i) for i in range(node.get_input_size())]
    return NodeFactory("opset1").create("Pad", inputs, node.get_attributes())


def _interpolate(node: ov.Node) -> ov.Node:
    """Interpolate-11 -> Interpolate-4, given both sizes and scales (from the static shapes)."""
    attributes = node.get_attributes()
    if attributes["mode"] in PILLOW_MODES:
        raise _fail(node, f"mode {attributes['mode']}")
    src = _static_shape(node, node.input_value(0))
    dst = _static_shape(node, node.output(0))
    axes = _constant(node, 2).tolist() if node.get_input_size() > 2 else list(range(len(src)))
    sizes = ov.op.Constant(np.array([dst[a] for a in axes], np.int64)).output(0)
    scales = node.input_value(1)
    if attributes["shape_calculation_mode"] == "sizes":
        scales = ov.op.Constant(np.array([dst[a] / src[a] for a in axes], np.float32)).output(0)
    inputs = [node.input_value(0), sizes, scales, ov.op.Constant(np.array(axes, np.int64)).output(0)]
    return NodeFactory("opset4").create("Interpolate", inputs, attributes)


def _topk(node: ov.Node) -> ov.Node:
    """TopK-11 -> TopK-3: same values; the order of tied indices is not guaranteed stable."""
    attributes = {key: value for key, value in node.get_attributes().items() if key != "stable"}
    return NodeFactory("opset3").create("TopK", [node.input_value(0), node.input_value(1)], attributes)


REWRITES: dict[str, Callable[[ov.Node], ov.Node]] = {
    "MaxPool-opset14": _maxpool,
    "AvgPool-opset14": _avgpool,
    "Pad-opset12": _pad,
    "Interpolate-opset11": _interpolate,
    "TopK-opset11": _topk,
}


def _replace(old: ov.Node, new: ov.Node) -> None:
    """Point every consumer of `old`'s outputs at `new`'s, keeping the friendly name."""
    new.set_friendly_name(old.get_friendly_name())
    for index, output in enumerate(old.outputs()):
        if output.get_target_inputs():
            output.replace(new.output(index))


def downgrade_for_2022(model: ov.Model) -> ov.Model:
    """Rewrite `model` in place (and return it) for OpenVINO 2022.3; OpsetError if an op cannot be."""
    for node in model.get_ordered_ops():
        rewrite = REWRITES.get(op_version(node))
        if rewrite:
            _replace(node, rewrite(node))
    model.validate_nodes_and_infer_types()
    unknown = unknown_to_2022(model)
    if unknown:
        raise OpsetError(f"ops OpenVINO 2022.3 cannot read and no rewrite exists for: {', '.join(unknown)}")
    return model
