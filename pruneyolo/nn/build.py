"""Typed graph -> PyTorch module in-process (the same layer classes codegen writes out), and weights in/out."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from pruneyolo.activations import ACTIVATIONS
from pruneyolo.darknet.graph import Conv, Graph, Node
from pruneyolo.darknet.weights import ConvWeights, DarknetWeights, part_sizes
from pruneyolo.nn import layers as L


def module_name(node: Node) -> str:
    """The attribute name of a node's module, shared by in-process modules and generated files."""
    return f"{node.kind}{node.index}"


def torch_activation(name: str) -> nn.Module | None:
    """The module for a canonical activation, built from the expression generated files write (None: linear)."""
    return None if name == "linear" else eval(ACTIVATIONS[name].module, {"nn": nn, "HardMish": L.HardMish})


def layer_class(node: Node) -> type[nn.Module]:
    """The PyTorch layer class a node's type declares (by name in pruneyolo.nn.layers, or a class of its own)."""
    layer = type(node).layer
    if layer is None:
        raise TypeError(f"no PyTorch layer for {node.kind}")
    return getattr(L, layer) if isinstance(layer, str) else layer


def layer_arguments(node: Node) -> list[tuple[str, object]]:
    """(parameter name, value) of a node's layer constructor, in order; activations still by name."""
    return list(zip(inspect.signature(layer_class(node)).parameters, node.layer_args(), strict=False))


def make_layer(node: Node) -> nn.Module:
    """The module for one node."""
    arguments = [torch_activation(value) if name == "activation" else value for name, value in layer_arguments(node)]
    return layer_class(node)(*arguments)


def output_layers(graph: Graph) -> list[int]:
    """The layers whose outputs `forward` returns: each head's input, or the last layer when the cfg has no
    [yolo] or [region] head."""
    return [head.inputs[0] for head in graph.heads] or [len(graph.nodes) - 1]


class DarknetModel(nn.Module):
    """A cfg's network; `forward` maps a float NCHW RGB image in [0, 1] to the raw head tensors, in cfg order."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.plan: list[tuple[str | None, tuple[int, ...]]] = []
        for node in graph.nodes:
            if node.pass_through:
                self.plan.append((None, node.inputs))
                continue
            self.add_module(module_name(node), make_layer(node))
            self.plan.append((module_name(node), node.inputs))
        for conv in graph.convs:
            if conv.share is not None:
                getattr(self, module_name(conv)).share_arrays(getattr(self, module_name(graph.nodes[conv.share])))
        self.head_inputs = output_layers(graph)

    def forward(self, x):
        outputs: list[torch.Tensor] = []
        for name, inputs in self.plan:
            args = [x if i < 0 else outputs[i] for i in inputs]
            outputs.append(args[0] if name is None else getattr(self, name)(*args))
        return [outputs[i] for i in self.head_inputs]


class DecodedModel(nn.Module):
    """A DarknetModel followed by in-graph decoding of every head into one [N, boxes, 5+C] tensor."""

    def __init__(self, model: DarknetModel, graph: Graph):
        super().__init__()
        self.model = model
        width, height = graph.size
        decoders = []
        for head in graph.heads:
            stride_xy = (width / head.out_shape[2], height / head.out_shape[1])
            decoders.append(L.YoloDecode(head.pixel_anchors, stride_xy, head.decode, head.scale_x_y, head.reg_max))
        self.decoders = nn.ModuleList(decoders)

    def forward(self, x):
        return torch.cat([decode(raw) for decode, raw in zip(self.decoders, self.model(x), strict=True)], 1)


class ScoresModel(nn.Module):
    """A DecodedModel's rows as one [N, 4+C, boxes] tensor: cx, cy, w, h, then objectness x class probability
    for each class (Ultralytics' export layout, read by model_api's YOLOv5/YOLOv8 wrappers)."""

    def __init__(self, decoded: DecodedModel):
        super().__init__()
        self.decoded = decoded

    def forward(self, x):
        rows = self.decoded(x)
        return torch.cat([rows[..., :4], rows[..., 5:] * rows[..., 4:5]], -1).transpose(1, 2)


def build_model(graph: Graph, weights: DarknetWeights | None = None) -> DarknetModel:
    """The in-process module for a graph, in eval mode, with weights loaded if given."""
    model = DarknetModel(graph)
    if weights is not None:
        load_weights(model, graph, weights)
    return model.eval()


def _conv_parts(model: DarknetModel, conv: Conv) -> list[tuple[str, tuple[int, ...], torch.Tensor]]:
    """(name, darknet shape, tensor) of each array a conv's block holds, in .weights order: the file layout of
    darknet.weights.part_sizes paired with the block's darknet_tensors, which must agree array by array."""
    block = getattr(model, module_name(conv))
    parts = list(zip(part_sizes(conv), block.darknet_tensors(), strict=True))
    for (name, shape), tensor in parts:
        if tensor.numel() != int(np.prod(shape)):
            raise ValueError(f"layer {conv.index}: .weights array {name} {shape} does not fit tensor {tuple(tensor.shape)}")
    return [(name, shape, tensor) for (name, shape), tensor in parts]


def load_weights(model: DarknetModel, graph: Graph, weights: DarknetWeights) -> None:
    """Copy darknet arrays into the module's parameters and BN buffers."""
    with torch.no_grad():
        for conv in graph.weighted_convs:
            layer = weights.layers[conv.index]
            for name, _, tensor in _conv_parts(model, conv):
                tensor.copy_(torch.from_numpy(np.asarray(getattr(layer, name))).view_as(tensor))


def export_weights(model: DarknetModel, graph: Graph, seen: int = 0) -> DarknetWeights:
    """The module's current values as darknet weights (header 0.2.5), e.g. after training."""
    result = DarknetWeights(seen=seen)
    for conv in graph.weighted_convs:
        parts = {name: tensor.detach().cpu().numpy().astype(np.float32).reshape(shape)
                 for name, shape, tensor in _conv_parts(model, conv)}
        result.layers[conv.index] = ConvWeights(**{"bias": None, **parts})
    return result
