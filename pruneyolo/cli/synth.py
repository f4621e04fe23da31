"""`pruneyolo synth`: write the synthetic shapes dataset and, optionally, synthetic camera videos."""

from __future__ import annotations

from pathlib import Path

import click

count = click.IntRange(min=0)


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", type=count, default=2000, show_default=True, help="Training images.")
@click.option("--val", type=count, default=300, show_default=True, help="Validation images.")
@click.option("--test", type=count, default=300, show_default=True, help="Test images.")
@click.option("--size", type=click.IntRange(min=32), default=416, show_default=True, help="Image side (px).")
@click.option("--seed", type=count, default=0, show_default=True, help="Same seed, same files.")
@click.option("--videos", type=count, default=0, show_default=True,
              help="Also record this many camera streams to OUT_DIR/videos/cam{i}.mp4 + .jsonl.")
@click.option("--frames", type=click.IntRange(min=1), default=300, show_default=True,
              help="Frames per video.")
def synth(out_dir, train, val, test, size, seed, videos, frames):
    """Generate the synthetic shape-detection dataset (YOLO txt + COCO json) into OUT_DIR."""
    from rich.progress import Progress

    from pruneyolo.data.synth import make_dataset, write_videos

    with Progress() as progress:
        images = progress.add_task("images", total=train + val + test)
        make_dataset(out_dir, train=train, val=val, test=test, size=size, seed=seed,
                     on_image=lambda: progress.advance(images))
        if videos:
            clips = progress.add_task("video frames", total=videos * frames)
            write_videos(out_dir / "videos", streams=videos, frames=frames, seed=seed,
                         on_frame=lambda: progress.advance(clips))
    click.echo(f"wrote {out_dir}")
