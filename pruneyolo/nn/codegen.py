"""Typed graph -> one standalone, readable PyTorch model file (Jinja2 template + the project's own layers)."""

from __future__ import annotations

import builtins
import inspect
import keyword
import re
from collections.abc import Collection
from importlib import resources
from pathlib import Path

import jinja2

from pruneyolo import __version__
from pruneyolo.activations import ACTIVATIONS
from pruneyolo.darknet.graph import Graph, Node
from pruneyolo.nn import layers
from pruneyolo.nn.build import layer_arguments, layer_class, module_name

TEMPLATE = "model.py.j2"


def _shape(shape) -> str:
    channels, height, width = shape
    return f"{height}x{width}x{channels}"


def class_name_for(path: str, reserved: Collection[str] = ()) -> str:
    """A CamelCase class name from a cfg file name, e.g. prune_0.88.cfg -> Prune088.

    Names that are keywords or would shadow a name the generated file uses (True, Route, ...; `reserved`: the
    layer classes it pastes from outside the package) get a prefix.
    """
    words = re.split(r"[^0-9a-zA-Z]+", Path(path).stem)
    name = "".join(word[:1].upper() + word[1:] for word in words if word)
    taken = keyword.iskeyword(name) or name in vars(layers) or name in reserved or hasattr(builtins, name)
    return name if name[:1].isalpha() and not taken else f"Model{name}"


def docstring_text(text: str) -> str:
    """`text` escaped for a triple-quoted docstring: backslashes, quotes and unprintable characters."""
    return "".join(f"\\{char}" if char in "\\\"" else char if char.isprintable()
                   else char.encode("unicode_escape").decode("ascii") for char in text)


def display_name(name: str) -> str:
    """A file name as text that is valid UTF-8: bytes the file system gave that are not UTF-8 (which Python
    holds as lone surrogates, and which no UTF-8 file can contain) written as \\xNN."""
    return "".join(f"\\x{ord(char) - 0xDC00:02x}" if "\udc80" <= char <= "\udcff" else
                   f"\\u{ord(char):04x}" if "\ud800" <= char <= "\udfff" else char for char in name)


def layer_call(node: Node) -> str:
    """`ClassName(arg, key=value)` constructing a node's layer, leaving out arguments at their defaults."""
    layer = layer_class(node)
    parameters = inspect.signature(layer).parameters
    parts = []
    for name, value in layer_arguments(node):
        if name == "activation":
            if value != "linear":
                parts.append(f"activation={ACTIVATIONS[value].module}")
        elif parameters[name].default is inspect.Parameter.empty:
            parts.append(repr(value))
        elif value != parameters[name].default:
            parts.append(f"{name}={value!r}")
    return f"{layer.__name__}({', '.join(parts)})"


def _variable(graph: Graph, index: int) -> str:
    """The variable holding a layer's output; pass-through layers ([yolo], [dropout]) reuse their input's."""
    while index >= 0 and graph.nodes[index].pass_through:
        index = graph.nodes[index].inputs[0]
    return "x" if index < 0 else f"x{index}"


def _forward_line(graph: Graph, node: Node) -> str:
    args = ", ".join(_variable(graph, i) for i in node.inputs)
    if node.pass_through:
        return node.codegen_note(args)
    return f"x{node.index} = self.{module_name(node)}({args})  # {_shape(node.out_shape)}"


def _outside_layers(graph: Graph) -> list[type]:
    """The graph's layer classes that live outside pruneyolo/nn/layers.py (layer types registered elsewhere)."""
    classes = {layer_class(node) for node in graph.nodes if not node.pass_through}
    return sorted((layer for layer in classes if layer.__module__ != layers.__name__), key=lambda c: c.__name__)


def _layers_source(graph: Graph) -> str:
    """pruneyolo/nn/layers.py without its module docstring, then the source of the graph's layer classes from
    outside it, pasted into the generated file."""
    source = inspect.getsource(layers)
    docstring_end = source.index('"""', 3) + 3
    extra = [inspect.getsource(layer).strip("\n") for layer in _outside_layers(graph)]
    return "\n\n\n".join([source[docstring_end:].strip("\n"), *extra])


def render_model(graph: Graph, default_weights: str | None = None) -> str:
    """The generated model file's text."""
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: resources.files("pruneyolo.templates").joinpath(name).read_text()),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    environment.filters["format_attr"] = lambda name: f"self.{name}"
    environment.filters["docstring"] = docstring_text
    modules = [node for node in graph.nodes if not node.pass_through]
    init_lines = [f"self.{module_name(node)} = {layer_call(node)}  "
                  f"# {_shape(graph.shape_into(node))} -> {_shape(node.out_shape)}" for node in modules]
    init_lines += [f"self.{module_name(conv)}.share_arrays(self.{module_name(graph.nodes[conv.share])})  "
                   "# share_index" for conv in graph.convs if conv.share is not None]
    heads = [{"index": head.index, "out_shape": head.out_shape, "stride": head.stride,
              "anchors_text": ", ".join(f"{w:g}x{h:g}" for w, h in head.head_anchors)} for head in graph.heads]
    cfg_name = display_name(Path(graph.path).name)
    channels, height, width = graph.input_shape
    return environment.get_template(TEMPLATE).render(
        class_name=class_name_for(graph.path, [layer.__name__ for layer in _outside_layers(graph)]), cfg_name=cfg_name, version=__version__, dialect=graph.dialect,
        width=width, height=height, channels=channels, heads=heads, params=graph.params, bflops=graph.bflops,
        file_name=display_name(f"{Path(graph.path).stem}.py"), layers_source=_layers_source(graph), layer_count=len(graph.nodes),
        init_lines=init_lines, forward_lines=[_forward_line(graph, node) for node in graph.nodes],
        outputs=[_variable(graph, head.inputs[0]) for head in graph.heads],
        conv_names=[module_name(conv) for conv in graph.weighted_convs], default_weights=repr(default_weights))
