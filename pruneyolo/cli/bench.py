"""The `bench` command: one speed table for a cfg + weights across deployment paths."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from pruneyolo.bench.variants import CALIB_IMAGES, VARIANTS
from pruneyolo.cli.options import calib_options, load_model, random_note, size_option
from pruneyolo.export import SYNTHETIC


def parse_variants(ctx, param, value) -> tuple[str, ...]:
    """`--variants a,b` -> ('a', 'b') (unknown names are rejected by bench)."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else VARIANTS


@click.command("bench")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False),
              help="Darknet .weights for CFG (none for a YOLOv5 .pt); random[:SEED]: seeded random weights, to time "
                   "an untrained cfg.")
@size_option
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(0.5),
              help="Per variant and mode (benchmark_app rounds to whole seconds).")
@click.option("--variants", callback=parse_variants, help=f"Comma-separated subset of {', '.join(VARIANTS)}.")
@calib_options(CALIB_IMAGES, SYNTHETIC)
@click.option("--no-benchmark-app", "no_app", is_flag=True, help="Skip the benchmark_app columns.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Bar chart PNG (default: <cfg stem>_bench.png).")
def bench_command(cfg, weights_path, size, seconds, variants, calib, calib_size, no_app, plot_path):
    """Time CFG + WEIGHTS as OpenVINO IR (f32, bf16, fp16, int8), OpenCV DNN, ONNX Runtime and PyTorch."""
    from rich.console import Console

    from pruneyolo.bench.timing import bench, footer, plot, result_table
    from pruneyolo.darknet.weights import write_weights
    from pruneyolo.export.quantize import calibration

    graph, weights, _ = load_model(cfg, weights_path, size, random_ok=True)
    source = calibration(calib, calib_size)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # a piped table keeps its columns
    with tempfile.TemporaryDirectory(prefix="pruneyolo-bench-") as workdir, console.status("bench") as status:
        if not weights_path or weights.random_seed is not None:  # OpenCV DNN reads a .weights file
            weights_path = Path(workdir) / "model.weights"
            write_weights(weights_path, graph, weights)
        result = bench(graph, weights, Path(weights_path), Path(workdir), seconds, variants, source, not no_app,
                       log=status.update)
    console.print(result_table(result))
    for line in footer(result):
        console.print(line, highlight=False)
    if weights.random_seed is not None:
        console.print(f"timed with {random_note(weights.random_seed)}", highlight=False)
    click.echo(f"wrote {plot(result, plot_path or f'{Path(cfg).stem}_bench.png')}")
