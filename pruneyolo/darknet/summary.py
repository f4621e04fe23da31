"""A graph as darknet's start-up listing (text) or as plain data (JSON)."""

from __future__ import annotations

from dataclasses import fields

from pruneyolo import __version__
from pruneyolo.darknet.graph import Graph, Node, channel_flow


def _shape(shape) -> str:
    channels, height, width = shape
    return f"{width:4d} x{height:4d} x{channels:5d}"


def format_summary(graph: Graph) -> str:
    """Darknet-style table: index, type, filters, size/stride, input -> output, BFLOPs; then totals."""
    lines = [f"pruneyolo {__version__}  {graph.path}",
             (f"dialect: {graph.dialect}   input: {graph.input_shape[2]}x{graph.input_shape[1]}x"
             f"{graph.input_shape[0]}"),
             (f"{'layer':>5}  {'type':<14}{'filters':>8}  {'size/strd(dil)':<16}{'input':>20} -> "
             f"{'output':<20}{'BFLOPs':>9}")]
    for node in graph.nodes:
        kind, filters, geometry = node.describe()
        flops = f"{node.bflops:9.3f}" if node.bflops else ""
        lines.append(f"{node.index:5d}  {kind:<14}{filters:>8}  {geometry:<16}"
                     f"{_shape(graph.shape_into(node)):>20} -> {_shape(node.out_shape):<20}{flops}")
    lines.append(f"Total BFLOPS {graph.bflops:.3f}   parameters {graph.params:,}   layers {len(graph.nodes)}")
    for number, head in enumerate(graph.heads):
        anchors = ", ".join(f"{w:g}x{h:g}" for w, h in head.head_anchors)
        lines.append(f"head {number}: layer {head.index}  {head.out_shape[2]}x{head.out_shape[1]}  stride "
                     f"{head.stride}  classes {head.classes}  decode {head.decode}  scale_x_y {head.scale_x_y:g}"
                     f"  anchors {anchors}")
    lines.extend(f"warning: {text}" for text in graph.warnings)
    return "\n".join(lines)


def _node_data(node: Node) -> dict:
    data = {"type": node.kind, "channels": channel_flow(node).value}
    for item in fields(node):
        value = getattr(node, item.name)
        data[item.name] = list(value) if isinstance(value, tuple) else value
    data["params"], data["bflops"] = node.params, round(node.bflops, 6)
    return data


def summary_data(graph: Graph) -> dict:
    """The same facts as format_summary, as JSON-ready data."""
    return {
        "path": graph.path,
        "dialect": graph.dialect,
        "input_shape": list(graph.input_shape),
        "params": graph.params,
        "bflops": round(graph.bflops, 6),
        "layers": [_node_data(node) for node in graph.nodes],
        "heads": [{"layer": head.index, "stride": head.stride, "classes": head.classes, "decode": head.decode,
                   "scale_x_y": head.scale_x_y, "anchors": [list(a) for a in head.head_anchors],
                   "grid": [head.out_shape[1], head.out_shape[2]]} for head in graph.heads],
        "warnings": list(graph.warnings),
    }
