"""`inspect`, `codegen` and `convert`: a cfg (+ weights) to its summary, PyTorch file, IR and ONNX."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from pruneyolo.cli.options import STORAGE_TYPE, calib_options, dialect_option, load_model, size_option
from pruneyolo.detect import HEADS_MODES
from pruneyolo.errors import PruneyoloError
from pruneyolo.export import SYNTHETIC
from pruneyolo.export.targets import TARGETS
from pruneyolo.modelfile import GRAPH_KINDS, require_kind


@click.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@size_option
@dialect_option
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
def inspect(cfg, size, dialect, as_json):
    """Parse CFG (or a YOLOv5 .pt) and print its layers, shapes, parameters and BFLOPs."""
    from pruneyolo import modelfile
    from pruneyolo.darknet.summary import format_summary, summary_data

    graph = modelfile.load_model(cfg, None, size, dialect, need_weights=False).graph  # its listing holds the warnings
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


def destinations(formats: tuple[str, ...], output_dir, ovms_dir, with_onnx: bool) -> dict[str, str]:
    """Each format convert writes -> its directory: --format's (default ir when -o is given), plus --onnx's and
    --ovms's, which keep their old spellings; every format goes to -o DIR but an --ovms repository."""
    chosen = list(formats) or (["ir"] if output_dir else [])
    chosen += [name for name, wanted in (("onnx", with_onnx), ("ovms", ovms_dir)) if wanted and name not in chosen]
    if not chosen:
        raise PruneyoloError("give -o DIR (IR files) or --ovms DIR (a model server repository), or both")
    places = {name: ovms_dir if name == "ovms" and ovms_dir else output_dir for name in chosen}
    if missing := [name for name, place in places.items() if not place]:
        raise PruneyoloError(f"--format {' and '.join(missing)} writes into -o DIR: give it")
    return places


def known_formats(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    """--format values, each a target of export.targets.TARGETS (looked up when the command runs)."""
    if unknown := [value for value in values if value not in TARGETS]:
        raise click.BadParameter(f"{unknown[0]!r}: choose from {', '.join(TARGETS)}")
    return values


def format_help() -> str:
    return "What to write (repeatable; default ir): " + "; ".join(
        f"{t.name}: {t.writes}, metadata in {t.metadata}" for t in TARGETS.values()) + "."


@click.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Darknet .weights for CFG (not with a YOLOv5 .pt or an ONNX file).")
@click.option("--output", "-o", "output_dir", type=click.Path(file_okay=False),
              help="Directory for what --format writes (<cfg stem>.xml/.bin by default).")
@click.option("--format", "formats", multiple=True, metavar="|".join(TARGETS), callback=known_formats,
              help=format_help())
@click.option("--storage", type=STORAGE_TYPE, default="fp32", show_default=True,
              help="Weight storage; int8: NNCF post-training quantization on --calib (the head decode stays float).")
@calib_options(300)
@click.option("--eval", "eval_data", type=click.Path(file_okay=False),
              help="Dataset from `pruneyolo synth`: print the IR's mAP on its test split next to the FP32 IR's.")
@click.option("--ovms", "ovms_dir", type=click.Path(file_okay=False),
              help="Also write an OpenVINO Model Server repository there (--format ovms, into DIR instead of -o): "
                   "DIR/<cfg stem>/<next version>/model.xml|bin + config.json.")
@click.option("--ovms-device", help="target_device in config.json (e.g. CPU, GPU, AUTO; default: none, OVMS "
                                    "picks).")
@click.option("--heads", type=click.Choice(HEADS_MODES), default="decoded", show_default=True,
              help="decoded: one [1,N,5+C] output of boxes; raw: one output per head; scores: one [1,4+C,N] "
                   "output of boxes and class scores (Ultralytics' layout, for OpenVINO model_api).")
@click.option("--onnx", "with_onnx", is_flag=True, help="Also write <cfg stem>.onnx (--format onnx; float NCHW RGB "
                                                        "input).")
@click.option("--names", type=click.Path(dir_okay=False), help="Darknet .names file with the class labels.")
@size_option
@dialect_option
def convert(cfg, weights, output_dir, formats, storage, calib, calib_size, eval_data, ovms_dir, ovms_device, heads,
            with_onnx, names, size, dialect):
    """Convert CFG + WEIGHTS (or a YOLOv5 .pt, or its export.py ONNX) to OpenVINO IR (u8 NHWC BGR input,
    metadata embedded), ONNX or a model server repository."""
    from rich.console import Console

    from pruneyolo.export.build import IrOptions, build_ir
    from pruneyolo.export.convert import read_names
    from pruneyolo.export.quantize import calibration
    from pruneyolo.export.targets import Exported, check_request, write_targets

    places = destinations(formats, output_dir, ovms_dir, with_onnx)
    if storage == "int8" and not calib:
        raise PruneyoloError(f"--storage int8 needs --calib DIR (calibration images) or --calib {SYNTHETIC}")
    if calib and storage != "int8":
        raise PruneyoloError(f"--calib is only used with --storage int8, not {storage}")
    if eval_data and not {"ir", "ovms"} & set(places):
        raise PruneyoloError("--eval scores the IR written: add --format ir")
    kind = require_kind(cfg, *GRAPH_KINDS, "onnx")
    check_request(list(places), kind, storage, heads, ["ovms_device"] if ovms_device else [])
    stem = Path(cfg).stem
    labels = read_names(names) if names else None
    extra = {"ovms_device": ovms_device}
    if kind == "onnx":
        from pruneyolo.export.onnx_wrap import wrap_onnx

        for option, given, reason in (("--weights", weights, "the ONNX holds its weights"),
                                      ("--eval", eval_data, "score the written IR with `pruneyolo eval`")):
            if given:
                raise PruneyoloError(f"{cfg}: {option} does not apply to an ONNX ({reason})")
        exported = Exported(stem, wrap_onnx(cfg, labels, size, storage), storage, heads, options=extra)
        written = write_targets(exported, places)
        click.echo(f"wrote {', '.join(map(str, written))} ({storage}, YOLOv5 ONNX with decoded output, input u8 "
                   "NHWC BGR)")
        return
    options = IrOptions(heads, labels, storage, calibration(calib, calib_size) if calib else None)
    graph, darknet_weights, model_labels = load_model(cfg, weights, size, dialect)
    quantizing = f", quantizing on {options.calibration.text}" if options.calibration else ""
    with Console(stderr=True).status(f"converting{quantizing}"):
        built = build_ir(graph, darknet_weights, replace(options, labels=labels or model_labels))
        exported = Exported(stem, built.model, storage, heads, built.module, graph, extra)
        written = write_targets(exported, places)
    width, height = graph.size
    click.echo(f"wrote {', '.join(map(str, written))} ({storage}, heads {heads}, input u8 NHWC BGR {width}x{height})")
    if eval_data:
        from pruneyolo.accuracy import map_vs_fp32

        xml = next(path for path in written if path.suffix == ".xml")
        metrics, reference = map_vs_fp32(xml, built.float_model, eval_data, storage)
        click.echo(f"{eval_data} test split, {metrics.images} images: mAP50 {storage} {metrics.map50:.4f} vs fp32 "
                   f"{reference.map50:.4f} ({100 * (metrics.map50 - reference.map50):+.2f} points), mAP50-95 "
                   f"{metrics.map50_95:.4f} vs {reference.map50_95:.4f} (IRs at the device's default precision)")
