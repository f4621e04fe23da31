"""The `pruneyolo` command line: one click group, each command a thin shell over a library function."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import PruneyoloError
from .graph import DIALECTS, load_graph
from .summary import format_summary, summary_data


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


class Group(click.Group):
    """Turns PruneyoloError into one line on stderr and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PruneyoloError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pruneyolo")
def main():
    """Prune Darknet YOLO models and deploy any (pruned) cfg to OpenVINO."""


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@size_option
@dialect_option
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
def inspect(cfg, size, dialect, as_json):
    """Parse CFG and print its layers, shapes, parameters and BFLOPs."""
    graph = load_graph(cfg, size, dialect)
    click.echo(json.dumps(summary_data(graph), indent=1) if as_json else format_summary(graph))

from .synth_cli import synth

main.add_command(synth)

from .prune_cli import compare_command, gammas_command, prune_command

main.add_command(prune_command)
main.add_command(compare_command)
main.add_command(gammas_command)

from .runner.cli import devices as devices_command, run as run_command

main.add_command(run_command)
main.add_command(devices_command)
