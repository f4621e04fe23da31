"""Options shared by several commands."""

from __future__ import annotations

import click

from pruneyolo.darknet.graph import DIALECTS


def parse_size(ctx, param, value):
    """`--size WxH` (or a single number for a square) -> (width, height)."""
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WxH, e.g. 416x416") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise click.BadParameter(f"{value!r} is not WxH, e.g. 416x416")
    return tuple(parts)


size_option = click.option("--size", callback=parse_size, help="Input size WxH (overrides [net]).")
dialect_option = click.option("--dialect", type=click.Choice(DIALECTS),
                              help="Force the cfg dialect (default: detected).")


def load_model(path, weights=None, size=None, dialect=None, *, need_weights: bool = True):
    """pruneyolo.yolov5.source.load_model, with each of the graph's warnings (e.g. darknet leniencies) on stderr."""
    from pruneyolo.yolov5.source import load_model as load

    loaded = load(path, weights, size, dialect, need_weights=need_weights)
    for warning in loaded.graph.warnings:
        click.echo(f"warning: {warning}", err=True)
    return loaded
