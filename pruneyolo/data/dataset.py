"""YOLO-txt datasets as `pruneyolo synth` writes them: splits, samples and their labels, images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pruneyolo.errors import PruneyoloError


@dataclass(frozen=True)
class Sample:
    """One image file and its labels: float32 [K, 5] (class, cx, cy, w, h) normalised to the image."""

    image: Path
    labels: np.ndarray


def read_labels(path: Path) -> np.ndarray:
    """A YOLO txt label file -> float32 [K, 5]; a missing file means no objects."""
    if not path.is_file():
        return np.zeros((0, 5), np.float32)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if any(len(row) != 5 for row in rows):
        raise PruneyoloError(f"{path}: every line must be 'class cx cy w h'")
    return np.array(rows, np.float32).reshape(-1, 5)


def split_dirs(data_dir, split: str) -> tuple[Path, Path]:
    """The images and labels folders of one split of a `pruneyolo synth` style dataset (data.json)."""
    root = Path(data_dir)
    index = root / "data.json"
    if not index.is_file():
        raise PruneyoloError(f"{root}: no data.json; make a dataset with `pruneyolo synth`")
    splits = json.loads(index.read_text()).get("splits", {})
    if split not in splits:
        raise PruneyoloError(f"{index}: no split {split!r} (has {', '.join(splits) or 'none'})")
    return root / splits[split]["images"], root / splits[split]["labels"]


def load_split(data_dir, split: str) -> list[Sample]:
    """Every image of a split with its labels, in file name order."""
    images, labels = split_dirs(data_dir, split)
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    return [Sample(path, read_labels(labels / f"{path.stem}.txt")) for path in paths]


def read_image(path: Path) -> np.ndarray:
    """A BGR uint8 image, or a PruneyoloError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PruneyoloError(f"{path}: not a readable image")
    return image


def pixel_boxes(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised (cx, cy, w, h) labels -> xyxy pixel boxes [K, 4] of a width x height image."""
    centre, half = labels[:, 1:3] * [width, height], labels[:, 3:5] * [width, height] / 2
    return np.concatenate([centre - half, centre + half], 1)
