"""`inspect`, `codegen` and `convert`: a cfg (+ weights) to its summary, PyTorch file, IR and ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pruneyolo.cli.options import dialect_option, load_model, size_option
from pruneyolo.errors import PruneyoloError


@click.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@size_option
@dialect_option
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
def inspect(cfg, size, dialect, as_json):
    """Parse CFG (or a YOLOv5 .pt) and print its layers, shapes, parameters and BFLOPs."""
    from pruneyolo.darknet.summary import format_summary, summary_data

    graph = load_model(cfg, None, size, dialect, need_weights=False).graph
    click.echo(json.dumps(summary_data(graph), indent=1) if as_json else format_summary(graph))


@click.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output .py (default: <cfg stem>.py).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Check these .weights fit and load them by default.")
@size_option
@dialect_option
def codegen(cfg, output, weights, size, dialect):
    """Write a standalone, readable PyTorch model file for CFG (a YOLOv5 .pt: its weights go beside it)."""
    from pruneyolo.darknet.weights import write_weights
    from pruneyolo.files import atomic_write
    from pruneyolo.nn.codegen import render_model

    graph, checkpoint_weights, _ = load_model(cfg, weights, size, dialect, need_weights=False)
    output = output or f"{Path(cfg).stem}.py"
    if checkpoint_weights is not None and not weights:
        weights = str(Path(output).with_suffix(".weights"))
        write_weights(weights, graph, checkpoint_weights)
    atomic_write(output, render_model(graph, str(Path(weights).resolve()) if weights else None))
    click.echo(f"wrote {output}: {len(graph.nodes)} layers, {graph.params:,} parameters, {graph.bflops:.3f} BFLOPs")


@click.command()
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
@click.option("--heads", type=click.Choice(["decoded", "raw", "scores"]), default="decoded", show_default=True,
              help="decoded: one [1,N,5+C] output of boxes; raw: one output per head; scores: one [1,4+C,N] "
                   "output of boxes and class scores (Ultralytics' layout, for OpenVINO model_api).")
@click.option("--onnx", "with_onnx", is_flag=True, help="Also write <cfg stem>.onnx (float NCHW RGB input).")
@click.option("--names", type=click.Path(dir_okay=False), help="Darknet .names file with the class labels.")
@size_option
@dialect_option
def convert(cfg, weights, output_dir, precision, calib_dir, calib_size, eval_data, ovms_dir, heads, with_onnx, names,
            size, dialect):
    """Convert CFG + WEIGHTS (or a YOLOv5 .pt, or its export.py ONNX) to OpenVINO IR (u8 NHWC BGR input,
    metadata embedded)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from pruneyolo.export.convert import export_module, read_names, save_ir, save_onnx, to_openvino
    from pruneyolo.export.ovms import model_name, write_repository
    from pruneyolo.export.quantize import calib_images, quantize_images

    if not output_dir and not ovms_dir:
        raise PruneyoloError("give -o DIR (IR files) or --ovms DIR (a model server repository), or both")
    if precision == "int8" and not calib_dir:
        raise PruneyoloError("--precision int8 needs --calib DIR (calibration images)")
    if calib_dir and precision != "int8":
        raise PruneyoloError("--calib is only used with --precision int8")
    if with_onnx and not output_dir:
        raise PruneyoloError("--onnx writes next to the IR: give -o DIR")
    if eval_data and heads == "raw":
        raise PruneyoloError("--eval scores decoded boxes: drop --heads raw")
    if Path(cfg).suffix.lower() == ".onnx":
        from pruneyolo.export.onnx_wrap import convert_onnx

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
        from pruneyolo.train.evaluate import map_vs_fp32

        metrics, reference = map_vs_fp32(written[0], float_model, eval_data, precision)
        click.echo(f"{eval_data} test split, {metrics.images} images: mAP50 {precision} {metrics.map50:.4f} vs fp32 "
                   f"{reference.map50:.4f} ({100 * (metrics.map50 - reference.map50):+.2f} points), mAP50-95 "
                   f"{metrics.map50_95:.4f} vs {reference.map50_95:.4f} (IRs at the device's default precision)")
