"""The `import` command: a YOLOv5 or YOLOv8 / YOLO11 checkpoint to Darknet cfg + weights + names."""

from __future__ import annotations

import click

from pruneyolo.cli.options import size_option


@click.command("import")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory for <stem>.cfg, <stem>.weights and <stem>.names.")
@size_option
def import_command(checkpoint, directory, size):
    """Read a YOLOv5 or YOLOv8/YOLO11 .pt (pruned or not) without running its code; write cfg, weights, names.

    The input size is not stored in a checkpoint: 640x640 unless --size (a multiple of the largest stride).
    """
    from pruneyolo.darknet.summary import format_summary
    from pruneyolo.yolov5.source import import_paths, write_import

    click.echo(format_summary(write_import(checkpoint, directory, size)[0]))
    click.echo(f"wrote {', '.join(str(path) for path in import_paths(checkpoint, directory))}")
