"""Options shared by several commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pruneyolo.errors import PruneyoloError
from pruneyolo.export import SYNTHETIC
from pruneyolo.export.precision import INFERENCE, STORAGE, inference_precision, weight_storage

if TYPE_CHECKING:
    from pruneyolo.modelfile import LoadedModel


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


class PrecisionName(click.ParamType):
    """One precision vocabulary as a click type: every alias accepted, the canonical name passed on."""

    def __init__(self, canonical, names):
        self.canonical, self.name = canonical, "|".join(names)

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{self.name}]"

    def convert(self, value, param, ctx):
        try:
            return self.canonical(value)
        except PruneyoloError as exc:
            self.fail(str(exc), param, ctx)


def calib_options(count: int, default: str | None = None):
    """--calib DIR|synthetic and --calib-size, the int8 calibration source as every command takes it."""
    source = click.option("--calib", metavar=f"DIR|{SYNTHETIC}", default=default, show_default=bool(default),
                          help=f"int8 calibration: a directory of .jpg/.png images, or '{SYNTHETIC}' (rendered "
                               "scenes).")
    size = click.option("--calib-size", default=count, show_default=True, type=click.IntRange(10),
                        help="Calibration images (or synthetic scenes) to use.")
    return lambda command: source(size(command))


STORAGE_TYPE = PrecisionName(weight_storage, STORAGE.values())
INFERENCE_TYPE = PrecisionName(inference_precision, INFERENCE.values())
size_option = click.option("--size", callback=parse_size, help="Input size WxH (overrides [net]).")


def dialect_option(command):
    """--dialect, for the commands that read cfgs (the cfg parser is imported with them, not with `run`)."""
    from pruneyolo.darknet.graph import DIALECTS

    return click.option("--dialect", type=click.Choice(DIALECTS), help="Force the cfg dialect (default: detected).")(
        command)


def echo_warnings(loaded: LoadedModel) -> LoadedModel:
    """The model, after each of its graph's warnings (e.g. darknet leniencies) went to stderr."""
    for warning in loaded.graph.warnings:
        click.echo(f"warning: {warning}", err=True)
    return loaded


def load_model(path, weights=None, size=None, dialect=None, *, need_weights: bool = True) -> LoadedModel:
    """pruneyolo.modelfile.load_model, warnings on stderr."""
    from pruneyolo import modelfile

    return echo_warnings(modelfile.load_model(path, weights, size, dialect, need_weights=need_weights))


def load_for_training(path, weights, size, out_dir) -> LoadedModel:
    """pruneyolo.modelfile.load_for_training, warnings on stderr."""
    from pruneyolo import modelfile

    return echo_warnings(modelfile.load_for_training(path, weights, size, out_dir))
