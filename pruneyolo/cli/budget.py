"""`pruneyolo prune --target-fps F | --target-ms M`: the budget options and the search run from the command line."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pruneyolo.bench import LIKE_TOLERANCE
from pruneyolo.bench.variants import CALIB_IMAGES
from pruneyolo.cli.options import INFERENCE_TYPE, STORAGE_TYPE, calib_options, random_note
from pruneyolo.errors import ArgumentError, PruneyoloError
from pruneyolo.export import SYNTHETIC

if TYPE_CHECKING:
    from pruneyolo.bench.budget import Budget
    from pruneyolo.bench.latency import Reference
    from pruneyolo.darknet.graph import Graph
    from pruneyolo.darknet.weights import DarknetWeights
    from pruneyolo.export.quantize import Calibration

BUDGET_OPTIONS = (
    click.option("--target-fps", type=float, help="Instead of --percent: prune as little as possible for this many "
                 "frames/s on each of --streams streams, measured on --device (THROUGHPUT hint)."),
    click.option("--target-ms", type=float, help="Instead of --percent: prune as little as possible to infer one "
                 "frame of every stream within this many ms (median latency, LATENCY hint)."),
    click.option("--target-like", type=click.Path(dir_okay=False, exists=True),
                 help="Instead of --percent: be as fast as this model (a cfg, random weights, or a .pt) at the same "
                 f"size, within {100 * LIKE_TOLERANCE:g}%, each candidate timed in turns with it (LATENCY hint) so "
                 "the machine's drifting speed cancels."),
    click.option("--device", default="CPU", show_default=True, help="OpenVINO device to measure on."),
    click.option("--precision", type=INFERENCE_TYPE, help="Inference precision to measure at (default: the "
                 "device's own)."),
    click.option("--storage", type=STORAGE_TYPE, default="fp32", show_default=True,
                 help="Weight storage of each candidate's IR; int8 quantizes it with NNCF on --calib."),
    click.option("--streams", default=1, show_default=True, type=click.IntRange(1),
                 help="Streams tiled into mosaics as `pruneyolo run` tiles them; one inference per mosaic."),
    click.option("--step", default=0.01, show_default=True, type=float, help="Grid of percents searched."),
    click.option("--seconds", default=3.0, show_default=True, type=click.FloatRange(0.5),
                 help="Measuring time per candidate."),
    click.option("--data", type=click.Path(file_okay=False),
                 help="Dataset from `pruneyolo synth`: add each candidate's mAP50 on its test split."),
    click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
                 help="Chart of the search (default: -o DIR/<cfg stem>_budget.png)."),
)


def budget_options(command):
    """Apply the budget options to a click command."""
    for option in reversed(BUDGET_OPTIONS):
        command = option(command)
    return calib_options(CALIB_IMAGES, SYNTHETIC)(command)


def mosaic_tiles(streams: int, graph: Graph) -> int:
    """Tiles per mosaic when `pruneyolo run` lays out `streams` sources on this input."""
    from pruneyolo.detect.mosaic import make_layout

    return make_layout(None, streams, *graph.size).tiles


def budget_of(args: dict, graph: Graph, calib: Calibration | None) -> tuple[Budget, Reference | None]:
    """The budget of the options; with --target-like, the reference model built as candidates are and timed."""
    from pruneyolo.bench.budget import Budget, mosaics_for

    tiles = mosaic_tiles(args["streams"], graph)
    if args["target_like"] is None:
        return Budget(args["target_fps"], args["target_ms"], args["streams"], tiles), None
    if args["target_fps"] is not None or args["target_ms"] is not None:
        raise ArgumentError(("target_fps", "target_ms", "target_like"), "(give exactly one)")
    reference = timed_reference(args["target_like"], graph.size, args, calib)
    return Budget(ms=reference.ms * mosaics_for(args["streams"], tiles), streams=args["streams"], tiles=tiles,
                  like=Path(reference.name).name, tolerance=LIKE_TOLERANCE), reference  # ms per frame set


def timed_reference(path: str, size: tuple[int, int], args: dict, calib: Calibration | None) -> Reference:
    """--target-like's model at `size` with random weights (a checkpoint: its own), its IR built with the
    candidates' storage, timed on the device (its speed does not depend on the weights' values)."""
    from pruneyolo import modelfile
    from pruneyolo.bench.latency import Reference, network_model
    from pruneyolo.bench.timing import SYNTHETIC_CALIBRATION
    from pruneyolo.export.precision import inference_precision

    weights = None if modelfile.model_kind(path) == "checkpoint" else modelfile.RANDOM
    loaded = modelfile.load_model(path, weights, size, random_ok=True)
    model = network_model(loaded.graph, loaded.weights, args["storage"], calib or SYNTHETIC_CALIBRATION)
    precision = args["precision"] and inference_precision(args["precision"])
    return Reference.timed(str(path), loaded.graph, model, args["device"], precision, args["seconds"])


def run_budget(cfg: str, graph: Graph, weights: DarknetWeights, budget_args: dict, shortcut_counts: tuple[int, ...],
               layer_keep: float | None, round_to: int, directory: str) -> None:
    """Search, print the table, save the chart and write the chosen model (or exit 2 when nothing met)."""
    import openvino as ov
    from rich.console import Console

    from pruneyolo.bench.budget import ir_measure, plot_search, search, search_table
    from pruneyolo.export.quantize import calibration
    from pruneyolo.prune.pruning import write_result
    from pruneyolo.runner.adapter import check_device

    args = budget_args
    check_device(ov.Core().available_devices, args["device"])
    calib = calibration(args["calib"], args["calib_size"]) if args["storage"] == "int8" else None
    budget, reference = budget_of(args, graph, calib)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    with tempfile.TemporaryDirectory(prefix="pruneyolo-budget-") as workdir, console.status("searching") as status:
        measure = ir_measure(Path(workdir), budget, args["device"], args["storage"], args["precision"],
                             args["seconds"], calib, args["data"] and Path(args["data"]), reference)
        found = search(graph, weights, budget, measure, shortcut_counts, args["step"], layer_keep, round_to,
                       log=status.update)
    width, height = graph.size
    title = (f"prune to a budget: {Path(cfg).name} @ {width}x{height} on {args['device']}\n"
             f"{args['storage']} weights" + (f" calibrated on {calib.text}" if calib else "")
             + f", precision {args['precision'] or 'device default'}, channels rounded to {round_to}")
    console.print(search_table(found, title))
    plot_path = plot_search(found, args["plot_path"] or Path(directory) / f"{Path(cfg).stem}_budget.png", title)
    if found.chosen is None:
        raise PruneyoloError(f"no percent up to the largest safe one meets {budget.text} on {args['device']} "
                             f"(chart: {plot_path}); try more --shortcuts, a smaller --size, --storage int8 or "
                             "fewer --streams")
    cfg_out, weights_out = write_result(found.result, directory, cfg)
    console.print(f"chose percent {found.chosen.percent:g}"
                  + (f" with {found.chosen.shortcuts} residual blocks removed" if found.chosen.shortcuts else "")
                  + f": {found.chosen.achieved:.1f} {'FPS per stream' if budget.fps else 'ms per frame set'}",
                  highlight=False)
    print_written(console, cfg_out, weights_out, plot_path, weights)


def run_allocate(cfg: str, graph: Graph, weights: DarknetWeights, budget_args: dict, layer_keep: float | None,
                 round_to: int, directory: str) -> None:
    """Profile (cached; an absent device is refused there), allocate, measure, print the table, and write the
    model and the frontier chart (nothing when no allocation meets the budget)."""
    from rich.console import Console

    from pruneyolo.bench.allocation import allocate_to_budget, allocation_table, inference_ms, plot_frontier
    from pruneyolo.bench.budget import ir_measure
    from pruneyolo.bench.latency import predict_ms, profile
    from pruneyolo.export.quantize import calibration
    from pruneyolo.prune.pruning import write_result

    args = budget_args
    calib = calibration(args["calib"], args["calib_size"]) if args["storage"] == "int8" else None
    console = Console() if sys.stdout.isatty() else Console(width=160)
    table = profile(graph, args["device"], args["precision"], args["storage"], progress=sys.stderr.isatty())
    budget, reference = budget_of(args, graph, calib)
    with tempfile.TemporaryDirectory(prefix="pruneyolo-allocate-") as workdir, console.status("allocating") as status:
        measure = ir_measure(Path(workdir), budget, args["device"], args["storage"], args["precision"],
                             args["seconds"], calib, args["data"] and Path(args["data"]), reference)
        found = allocate_to_budget(graph, weights, table, budget, measure, layer_keep, round_to, log=status.update,
                                   start_ms=reference and predict_ms(table, reference.graph))
    width, height = graph.size
    title = (f"latency allocation: {Path(cfg).name} @ {width}x{height} on {args['device']} ({table.device_name})\n"
             f"{table.storage} weights, precision {table.precision}, channels rounded to {round_to}")
    console.print(allocation_table(found, title))
    if found.chosen is None:
        best = min(found.frontier)[0]
        reason = (f"the narrowest allocation predicts {best:.2f} ms" if not found.trials else
                  f"{len(found.trials)} allocations measured over it")
        raise PruneyoloError(f"no allocation meets {budget.text} ({inference_ms(budget):.2f} ms per inference) on "
                             f"{args['device']}: {reason}; try a smaller --size, --storage int8, a lower --layer-keep "
                             "or fewer --streams")
    stem = (f"alloc_like_{Path(budget.like).stem}" if budget.like else
            f"alloc_{budget.fps or budget.ms:g}{'fps' if budget.fps else 'ms'}") + f"_{Path(cfg).stem}"
    plot_path = plot_frontier(found, args["plot_path"] or Path(directory) / f"{stem}_frontier.png", title)
    cfg_out, weights_out = write_result(found.result, directory, cfg, stem)
    allocation = found.chosen.allocation
    console.print(f"chose {100 * allocation.importance:.1f}% of the |gamma| kept, {len(allocation.removed)} residual "
                  f"blocks removed: predicted {allocation.predicted_ms:.2f} ms, measured {found.chosen.measured_ms:.2f} "
                  f"ms per inference", highlight=False)
    print_written(console, cfg_out, weights_out, plot_path, weights)


def print_written(console, cfg_out: Path, weights_out: Path | None, plot_path: Path, weights: DarknetWeights) -> None:
    """What a budgeted prune wrote; with random weights only the cfg, which then needs training."""
    if weights_out is None:
        console.print(f"wrote {cfg_out} and {plot_path}; no .weights: the search ran on "
                      f"{random_note(weights.random_seed)}, so train the cfg (or prune trained weights)",
                      highlight=False)
    else:
        console.print(f"wrote {cfg_out}, {weights_out} and {plot_path}", highlight=False)
