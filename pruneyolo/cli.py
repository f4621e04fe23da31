"""The `pruneyolo` command line: one click group, each command a thin shell over a library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .cfg import atomic_write
from .errors import PruneyoloError
from .graph import DIALECTS
from .summary import format_summary, summary_data
from .yolov5.source import load_model


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
    """Parse CFG (or a YOLOv5 .pt) and print its layers, shapes, parameters and BFLOPs."""
    graph = load_model(cfg, None, size, dialect, need_weights=False).graph
    click.echo(json.dumps(summary_data(graph), indent=1) if as_json else format_summary(graph))


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output .py (default: <cfg stem>.py).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Check these .weights fit and load them by default.")
@size_option
@dialect_option
def codegen(cfg, output, weights, size, dialect):
    """Write a standalone, readable PyTorch model file for CFG (a YOLOv5 .pt: its weights go beside it)."""
    from .codegen import render_model
    from .weights import write_weights

    graph, checkpoint_weights, _ = load_model(cfg, weights, size, dialect, need_weights=False)
    output = output or f"{Path(cfg).stem}.py"
    if checkpoint_weights is not None and not weights:
        weights = str(Path(output).with_suffix(".weights"))
        write_weights(weights, graph, checkpoint_weights)
    atomic_write(output, render_model(graph, str(Path(weights).resolve()) if weights else None))
    click.echo(f"wrote {output}: {len(graph.nodes)} layers, {graph.params:,} parameters, {graph.bflops:.3f} BFLOPs")


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Darknet .weights for CFG (not with a YOLOv5 .pt or an ONNX file).")
@click.option("--output", "-o", "output_dir", type=click.Path(file_okay=False),
              help="Directory for <cfg stem>.xml/.bin (and .onnx).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="int8: NNCF post-training quantization with --calib images (the head decode stays float).")
@click.option("--calib", "calib_dir", type=click.Path(), help="Directory of .jpg/.png calibration images (int8).")
@click.option("--calib-size", default=300, show_default=True, type=click.IntRange(10),
              help="Calibration images to use (int8).")
@click.option("--eval", "eval_data", type=click.Path(file_okay=False),
              help="Dataset from `pruneyolo synth`: print the IR's mAP on its test split next to the FP32 IR's.")
@click.option("--ovms", "ovms_dir", type=click.Path(file_okay=False),
              help="Also write an OpenVINO Model Server repository: DIR/<cfg stem>/1/model.xml|bin + config.json.")
@click.option("--heads", type=click.Choice(["decoded", "raw"]), default="decoded", show_default=True,
              help="decoded: one [1,N,5+C] output of boxes; raw: one output per head.")
@click.option("--onnx", "with_onnx", is_flag=True, help="Also write <cfg stem>.onnx (float NCHW RGB input).")
@click.option("--names", type=click.Path(dir_okay=False), help="Darknet .names file with the class labels.")
@size_option
@dialect_option
def convert(cfg, weights, output_dir, precision, calib_dir, calib_size, eval_data, ovms_dir, heads, with_onnx, names,
            size, dialect):
    """Convert CFG + WEIGHTS (or a YOLOv5 .pt, or its export.py ONNX) to OpenVINO IR (u8 NHWC BGR input,
    metadata embedded)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .convert import export_module, read_names, save_ir, save_onnx, to_openvino
    from .ovms import model_name, write_repository
    from .quantize import calib_images, quantize_images

    if not output_dir and not ovms_dir:
        raise PruneyoloError("give -o DIR (IR files) or --ovms DIR (a model server repository), or both")
    if precision == "int8" and not calib_dir:
        raise PruneyoloError("--precision int8 needs --calib DIR (calibration images)")
    if calib_dir and precision != "int8":
        raise PruneyoloError("--calib is only used with --precision int8")
    if with_onnx and not output_dir:
        raise PruneyoloError("--onnx writes next to the IR: give -o DIR")
    if eval_data and heads != "decoded":
        raise PruneyoloError("--eval scores decoded boxes: drop --heads raw")
    if Path(cfg).suffix.lower() == ".onnx":
        from .yolov5.onnx import convert_onnx

        written = convert_onnx(cfg, output_dir, ovms_dir, precision=precision, heads=heads, with_onnx=with_onnx,
                               weights=weights, calib=calib_dir, eval_data=eval_data, names=names, size=size)
        click.echo(f"wrote {', '.join(map(str, written))} ({precision}, YOLOv5 ONNX with decoded output, input u8 "
                   "NHWC BGR)")
        return
    calib_paths = calib_images(calib_dir, calib_size) if calib_dir else []
    stem = Path(cfg).stem
    steps = (["load model", "convert to OpenVINO"] + (["quantize (NNCF)"] if calib_paths else [])
             + ["save IR"] + (["export ONNX"] if with_onnx else []))
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(steps[0], total=len(steps))

        def step(done_name, result):
            bar.update(task, advance=1, description=steps[min(steps.index(done_name) + 1, len(steps) - 1)])
            return result

        graph, darknet_weights, labels = step("load model", load_model(cfg, weights, size, dialect))
        labels = read_names(names) if names else labels
        model = step("convert to OpenVINO", to_openvino(graph, darknet_weights, heads, labels, precision))
        float_model = model
        if calib_paths:
            model = step("quantize (NNCF)", quantize_images(model, calib_paths))
        storage = "fp16" if precision == "fp16" else "fp32"  # int8 keeps its float ops (the decode) in fp32
        written = [save_ir(model, Path(output_dir) / f"{stem}.xml", storage)] if output_dir else []
        if ovms_dir:
            written += write_repository(model, ovms_dir, model_name(stem), precision=storage)
        step("save IR", written)
        if with_onnx:
            step("export ONNX", save_onnx(export_module(graph, darknet_weights, heads), graph,
                                          Path(output_dir) / f"{stem}.onnx", heads))
    click.echo(f"wrote {', '.join(map(str, written))} ({precision}, heads {heads}, input u8 NHWC BGR "
               f"{graph.input_shape[2]}x{graph.input_shape[1]})" + (" and .onnx" if with_onnx else ""))
    if eval_data:
        from .quantize import map_vs_fp32

        metrics, reference = map_vs_fp32(written[0], float_model, eval_data, precision)
        click.echo(f"{eval_data} test split, {metrics.images} images: mAP50 {precision} {metrics.map50:.4f} vs fp32 "
                   f"{reference.map50:.4f} ({100 * (metrics.map50 - reference.map50):+.2f} points), mAP50-95 "
                   f"{metrics.map50_95:.4f} vs {reference.map50_95:.4f} (IRs at the device's default precision)")


@main.command()
@click.argument("jsonl", type=click.Path(dir_okay=False, exists=True))
@click.option("--source", "sources", multiple=True, required=True,
              help="The run's synthetic --source values, in the same order.")
def score(jsonl, sources):
    """Score a `pruneyolo run` JSONL of synthetic sources against the scenes' ground truth."""
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from .demo import score_run

    with tempfile.TemporaryDirectory() as workdir:
        scores = score_run(jsonl, list(sources), workdir)
    table = Table(title="detections vs synthetic ground truth (IoU 0.5; P/R at score >= 0.25)")
    for column in ("stream", "frames", "P", "R", "mAP50", "mAP50-95"):
        table.add_column(column, justify="right")
    for s in scores:
        table.add_row(str(s.stream), str(s.frames), f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.map50:.3f}",
                      f"{s.map50_95:.3f}")
    Console().print(table)


from .synth_cli import synth

main.add_command(synth)

from .prune_cli import compare_command, gammas_command, prune_command

main.add_command(prune_command)
main.add_command(compare_command)
main.add_command(gammas_command)

from .runner.cli import devices as devices_command
from .runner.cli import run as run_command

main.add_command(run_command)
main.add_command(devices_command)

from .train_cli import eval_command, train_command

main.add_command(train_command)
main.add_command(eval_command)

from .bench_cli import bench_command

main.add_command(bench_command)

from .yolov5.cli import import_command

main.add_command(import_command)
