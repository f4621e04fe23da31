"""The `prune`, `compare` and `gammas` commands."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pruneyolo.cli.budget import budget_options
from pruneyolo.cli.options import load_model, size_option
from pruneyolo.errors import PruneyoloError
from pruneyolo.prune import DEFAULT_ROUND, DEVICE_ROUND


def parse_percents(ctx, param, value):
    """`--percent 0.5,0.7,0.9` -> a tuple of floats, each in [0, 1)."""
    if value is None:
        return ()
    try:
        percents = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or comma-separated numbers, e.g. 0.8") from None
    if not percents or any(not 0 <= percent < 1 for percent in percents):
        raise click.BadParameter(f"{value!r}: each percent must be in [0, 1), e.g. 0.8")
    return percents


def parse_counts(ctx, param, value):
    """`--shortcuts 0,4,8` -> a tuple of ints, each >= 0."""
    try:
        counts = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a count or comma-separated counts, e.g. 4") from None
    if not counts or min(counts) < 0:
        raise click.BadParameter(f"{value!r}: each count must be >= 0, e.g. 4")
    return counts


weights_option = click.option("--weights", "weights_path", type=click.Path(dir_okay=False),
                              help="Darknet .weights for CFG (none for a YOLOv5 .pt).")


@click.command("prune")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False),
              help="Darknet .weights for CFG (none for a YOLOv5 .pt); with a budget, random[:SEED]: seeded random "
                   "weights, to find an untrained cfg's prune (only the cfg is written).")
@click.option("--percent", "percents", callback=parse_percents,
              help="Fraction of prunable channels (lowest |gamma|) to cut; several, comma-separated, for a sweep "
                   "(or give --target-fps / --target-ms).")
@click.option("--layer-keep", type=click.FloatRange(0, 1),
              help="Allow percents that would empty a layer: each layer keeps at least max(1, ceil(channels * K)) "
                   "of its strongest channels (the published tools' --layer_keep, e.g. 0.01). Without it such "
                   "percents are refused.")
@click.option("--shortcuts", "shortcut_counts", default="0", show_default=True, callback=parse_counts,
              help="Also remove this many [conv][conv][shortcut] residual blocks (lowest mean |gamma|); with a "
                   "budget, several comma-separated counts are searched.")
@click.option("--round", "round_to", type=click.IntRange(1),
              help=f"Keep each pruned layer's channel count a multiple of this (the next-largest |gamma| fill up); "
                   f"default {DEFAULT_ROUND}, with --allocate latency the device's: "
                   + ", ".join(f"{device} {multiple}" for device, multiple in DEVICE_ROUND.items()) + ".")
@click.option("--allocate", type=click.Choice(["global", "latency"]), default="global", show_default=True,
              help="With a budget: 'global' searches one |gamma| percent (and --shortcuts counts); 'latency' "
                   "profiles each layer on --device (cached; `pruneyolo profile`) and chooses every layer's width "
                   "and which residual blocks go for the most |gamma| kept within the predicted budget.")
@click.option("-o", "--output", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory for prune_<P>[_shortcut_<N>]_<stem>.cfg/.weights.")
@size_option
@budget_options
def prune_command(cfg, weights_path, percents, layer_keep, shortcut_counts, round_to, allocate, directory, size,
                  **budget_args):
    """Prune CFG + --weights (or a YOLOv5 .pt) by BatchNorm |gamma| and write Darknet cfg+weights: at --percent,
    or as little as meets --target-fps / --target-ms on a device."""
    from rich.console import Console

    from pruneyolo.cli.budget import run_allocate, run_budget
    from pruneyolo.darknet.weights import write_weights
    from pruneyolo.prune import device_round
    from pruneyolo.prune.pruning import prune, write_result
    from pruneyolo.prune.report import SweepRow, floor_note, stage_table, sweep_table

    budgeted = any(budget_args[name] is not None for name in ("target_fps", "target_ms", "target_like"))
    if budgeted == bool(percents):
        raise PruneyoloError("give either --percent or a budget (--target-fps, --target-ms or --target-like)")
    if not budgeted and len(shortcut_counts) > 1:
        raise PruneyoloError("several --shortcuts counts are searched only with a budget (--target-fps, --target-ms or --target-like)")
    if allocate == "latency" and not budgeted:
        raise PruneyoloError("--allocate latency needs a budget (--target-fps, --target-ms or --target-like)")
    if allocate == "latency" and shortcut_counts != (0,):
        raise PruneyoloError("--allocate latency chooses the residual blocks itself: leave out --shortcuts")
    if round_to is None:
        round_to = device_round(budget_args["device"]) if allocate == "latency" else DEFAULT_ROUND
    graph, weights, _ = load_model(cfg, weights_path, size, random_ok=budgeted)
    if allocate == "latency":
        return run_allocate(cfg, graph, weights, budget_args, layer_keep, round_to, directory)
    if budgeted:
        return run_budget(cfg, graph, weights, budget_args, shortcut_counts, layer_keep, round_to, directory)
    results = [prune(graph, weights, percent, layer_keep, shortcut_counts[0], round_to=round_to)
               for percent in percents]
    console = Console()
    rows = []
    for result in results:
        cfg_out, weights_out = write_result(result, directory, cfg)
        rows.append(SweepRow(result, cfg_out, weights_out))
        if len(results) == 1:
            console.print(stage_table(graph, result))
        if result.floored:
            console.print(f"prune {result.percent:g}: {floor_note(result)}", soft_wrap=True)
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

    from pruneyolo.prune.report import compare_table

    graphs = [load_model(path, None, size, need_weights=False).graph for path in (first, second)]
    Console(width=160).print(compare_table(*graphs))


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
