"""The `prune`, `compare` and `gammas` commands."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pruneyolo.cli.options import load_model, size_option


def parse_percents(ctx, param, value):
    """`--percent 0.5,0.7,0.9` -> a tuple of floats, each in [0, 1)."""
    try:
        percents = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or comma-separated numbers, e.g. 0.8") from None
    if not percents or any(not 0 <= percent < 1 for percent in percents):
        raise click.BadParameter(f"{value!r}: each percent must be in [0, 1), e.g. 0.8")
    return percents


weights_option = click.option("--weights", "weights_path", type=click.Path(dir_okay=False),
                              help="Darknet .weights for CFG (none for a YOLOv5 .pt).")


@click.command("prune")
@click.argument("cfg", type=click.Path(dir_okay=False))
@weights_option
@click.option("--percent", "percents", required=True, callback=parse_percents,
              help="Fraction of prunable channels (lowest |gamma|) to cut; several, comma-separated, for a sweep.")
@click.option("--layer-keep", default=0.01, show_default=True, type=float,
              help="Each layer keeps at least this fraction of its channels (and at least one).")
@click.option("--shortcuts", default=0, show_default=True, type=int,
              help="Also remove this many [conv][conv][shortcut] residual blocks (lowest mean |gamma|).")
@click.option("-o", "--output", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory for prune_<P>[_shortcut_<N>]_<stem>.cfg/.weights.")
@size_option
def prune_command(cfg, weights_path, percents, layer_keep, shortcuts, directory, size):
    """Prune CFG + --weights (or a YOLOv5 .pt) by BatchNorm |gamma| and write Darknet cfg+weights."""
    from rich.console import Console

    from pruneyolo.darknet.weights import write_weights
    from pruneyolo.prune.pruning import prune, write_result
    from pruneyolo.prune.report import SweepRow, stage_table, sweep_table

    graph, weights, _ = load_model(cfg, weights_path, size)
    results = [prune(graph, weights, percent, layer_keep, shortcuts) for percent in percents]
    console = Console()
    rows = []
    for result in results:
        cfg_out, weights_out = write_result(result, directory, cfg)
        rows.append(SweepRow(result, cfg_out, weights_out))
        if len(results) == 1:
            console.print(stage_table(graph, result))
        console.print(f"wrote {cfg_out} and {weights_out}")
    if len(results) > 1:
        with tempfile.TemporaryDirectory(prefix="pruneyolo-prune-") as workdir:
            if not weights_path:  # the sweep table compares file sizes with the original's .weights
                weights_path = Path(workdir) / "original.weights"
                write_weights(weights_path, graph, weights)
            console.print(sweep_table(graph, Path(weights_path), rows))


@click.command("compare")
@click.argument("first", type=click.Path(dir_okay=False))
@click.argument("second", type=click.Path(dir_okay=False))
@size_option
def compare_command(first, second, size):
    """Compare two cfgs (e.g. before and after pruning) layer by layer."""
    from rich.console import Console

    from pruneyolo.darknet.graph import load_graph
    from pruneyolo.prune.report import compare_table

    Console(width=160).print(compare_table(load_graph(first, size), load_graph(second, size)))


@click.command("gammas")
@click.argument("cfg", type=click.Path(dir_okay=False))
@weights_option
@click.option("-o", "--output", "image", required=True, type=click.Path(dir_okay=False),
              help="PNG to write.")
@click.option("--percent", type=click.FloatRange(0, 1, max_open=True), help="Draw the threshold of this percent.")
def gammas_command(cfg, weights_path, image, percent):
    """Plot the |gamma| histogram (overall and per stage) of CFG's (or a YOLOv5 .pt's) prunable BatchNorm layers."""
    from pruneyolo.prune.report import plot_gammas

    graph, weights, _ = load_model(cfg, weights_path)
    plot_gammas(graph, weights, image, percent)
    click.echo(f"wrote {image}")
