"""INT8 post-training quantization of a pruneyolo IR with NNCF; the in-graph head decode stays in float."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import openvino as ov

from pruneyolo.detect.letterbox import letterbox
from pruneyolo.errors import ArgumentError, PruneyoloError
from pruneyolo.export import SYNTHETIC

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_CALIB_IMAGES = 10
PRESET = "mixed"  # symmetric weights, asymmetric activations (leaky outputs are mostly positive)
CONV_TYPES = ("Convolution", "GroupConvolution")
SHAPE_ONLY_TYPES = ("Constant", "ShapeOf")


@dataclass(frozen=True)
class Calibration:
    """Where int8 calibration inputs come from: image files, letterboxed as `pruneyolo run` feeds the IR, or
    `scenes` synthetic scenes (`pruneyolo synth`'s renderer)."""

    images: tuple[Path, ...] = ()
    scenes: int = 0

    def __post_init__(self):
        if bool(self.images) == (self.scenes > 0):
            raise PruneyoloError("calibration takes either image files or a number of synthetic scenes")

    @property
    def text(self) -> str:
        return f"{len(self.images)} images" if self.images else f"{self.scenes} synthetic scenes"


def calibration(source, count: int) -> Calibration:
    """A directory's first `count` images, or `count` synthetic scenes for the source 'synthetic'."""
    if str(source) == SYNTHETIC:
        return Calibration(scenes=count)
    return Calibration(tuple(calib_images(source, count)))


def calib_images(directory, count: int) -> list[Path]:
    """The first `count` .jpg/.png files of `directory` (searched recursively, sorted by path)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArgumentError("calib", f"{directory}: no such directory of calibration images")
    found = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(found) < MIN_CALIB_IMAGES:
        raise ArgumentError("calib", f"{directory}: {len(found)} .jpg/.png images; calibration needs at least "
                                     f"{MIN_CALIB_IMAGES}")
    if len(found) < count:
        raise ArgumentError("calib_size", f"{count}: {directory} has {len(found)} .jpg/.png images; add images or "
                                          f"ask for {len(found)}")
    return found[:count]


def read_calib_image(path: Path, width: int, height: int) -> np.ndarray:
    """One calibration file as the IR's input tensor, letterboxed as `pruneyolo run` feeds the IR."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PruneyoloError(f"{path}: not a readable image")
    return letterbox(image, width, height)[0][None]


def input_size(model: ov.Model) -> tuple[int, int]:
    """(width, height) of an NHWC [1, H, W, 3] IR input."""
    _, height, width, _ = model.inputs[0].get_partial_shape().to_shape()
    return width, height


def is_convolution(node: ov.Node) -> bool:
    """A convolution, or the bias Add of one (conv output + constant): the layer a head's decode starts after."""
    if node.get_type_name() in CONV_TYPES:
        return True
    if node.get_type_name() != "Add":
        return False
    first, second = (value.get_node().get_type_name() for value in node.input_values())
    return first in CONV_TYPES and second == "Constant"


def decode_ops(model: ov.Model) -> list[ov.Node]:
    """Every op on a data path from a head's last convolution to the outputs (the decode), constants and
    shape arithmetic left out; the walk back stops at convolutions and never follows a ShapeOf."""
    found: dict[str, ov.Node] = {}
    pending = [result.input_value(0).get_node() for result in model.get_results()]
    while pending:
        node = pending.pop()
        if is_convolution(node) or node.get_type_name() in SHAPE_ONLY_TYPES or node.get_friendly_name() in found:
            continue
        found[node.get_friendly_name()] = node
        pending += [value.get_node() for value in node.input_values()]
    return list(found.values())


def quantize_model(model: ov.Model, images: Iterable[np.ndarray], subset_size: int) -> ov.Model:
    """NNCF PTQ of an IR over calibration input tensors, with the decode ops in the ignored scope."""
    import nncf
    from nncf.common.logging import nncf_logger

    ignored = nncf.IgnoredScope(names=[node.get_friendly_name() for node in decode_ops(model)])
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # NNCF lists every op it leaves unquantized at INFO
    try:
        return nncf.quantize(model, nncf.Dataset(list(images)), subset_size=subset_size,
                             preset=nncf.QuantizationPreset(PRESET), ignored_scope=ignored)
    finally:
        nncf_logger.setLevel(level)


def quantize_images(model: ov.Model, paths: list[Path]) -> ov.Model:
    """Quantize with calibration image files, letterboxed to the IR input."""
    width, height = input_size(model)
    return quantize_model(model, (read_calib_image(path, width, height) for path in paths), len(paths))


def quantize(model: ov.Model, source: Calibration) -> ov.Model:
    """Quantize on a calibration source's images or synthetic scenes."""
    if source.images:
        return quantize_images(model, list(source.images))
    return quantize_model(model, synthetic_calib(model, source.scenes), source.scenes)


def synthetic_calib(model: ov.Model, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` synthetic scenes (`pruneyolo synth`'s renderer) as input tensors, for when no images are given."""
    from pruneyolo.data.synth import render_scene

    width, height = input_size(model)
    return [render_scene(np.random.default_rng([seed, i]), width, height)[0][None] for i in range(count)]
