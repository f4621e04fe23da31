"""The `profile` command: each prunable conv's latency over its widths on a device, cached for `prune --allocate`."""

from __future__ import annotations

import sys

import click

from pruneyolo.cli.options import INFERENCE_TYPE, STORAGE_TYPE, load_model, size_option

device_option = click.option("--device", default="CPU", show_default=True, help="OpenVINO device to profile on.")
precision_option = click.option("--precision", type=INFERENCE_TYPE,
                                help="Inference precision (default: the device's own).")
storage_option = click.option("--storage", type=STORAGE_TYPE, default="fp32", show_default=True,
                              help="Weight storage the layers are measured with (int8: FakeQuantize on input and "
                                   "weights, as quantized IRs run).")
step_option = click.option("--step", "width_step", default=16, show_default=True, type=click.IntRange(8),
                           help="Width grid above 64 channels (up to 64: 1, 2, 4 and every half step).")
layer_seconds_option = click.option("--layer-seconds", default=0.02, show_default=True, type=click.FloatRange(0.001),
                                    help="Timing per layer and width (median of back-to-back calls, >= 3).")


@click.command("profile")
@click.argument("cfg", type=click.Path(dir_okay=False))
@size_option
@device_option
@precision_option
@storage_option
@step_option
@layer_seconds_option
def profile_command(cfg, size, device, precision, storage, width_step, layer_seconds):
    """Measure every conv of CFG alone on --device over a grid of input and output widths (cached per device,
    precision, storage, OpenVINO version and layer), fit the table to whole networks, and print it."""
    from rich.console import Console

    from pruneyolo.bench.latency import cache_root, profile, table_view

    graph = load_model(cfg, None, size, need_weights=False).graph
    table = profile(graph, device, precision, storage, width_step, layer_seconds, progress=sys.stderr.isatty())
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table_view(table, graph))
    for raw, measured in table.fit:
        console.print(f"whole network: sum of conv ms {raw:.2f}, measured {measured:.2f}", highlight=False)
    console.print(f"fit: a network's ms interpolated between these by its sum of conv ms (least-squares line: "
                  f"{table.scale:.3f} x sum + {table.other_ms:.2f} ms); cached in {cache_root()}", highlight=False)
