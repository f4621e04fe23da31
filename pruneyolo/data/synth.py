"""A deterministic synthetic detection task: five shape classes in cluttered scenes, as dataset or cameras.

Boxes everywhere are pixel edges `(x1, y1, x2, y2)`: x1 is the first covered column, x2 one past the last.
Dataset labels: YOLO txt uses class indexes 0..K-1; COCO json uses `category_id = class index + 1` and
`image id = file number + 1` (pycocotools treats id 0 as "no match").
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pruneyolo.errors import PruneyoloError
from pruneyolo.files import atomic_write

CLASSES = ("circle", "triangle", "square", "star", "cross")
SPLITS = ("train", "val", "test")
MIN_VISIBLE = 0.4  # objects showing less than this fraction of their pixels are left out of the scene
MIN_PIXELS = 24  # ... and so are objects showing fewer pixels than this
SUBPIXEL = 4  # fractional bits for cv2 polygon drawing
ANGLES = 72  # SceneStream precomputes its sprites at this many rotations
NOISE_MEAN = 8  # SceneStream's sensor noise is added as uint8 around this level, then taken out again
LETTERS = "abcdefghkmnrsuvwyz"  # no o, t, x: they resemble target shapes


@dataclass(frozen=True)
class Placed:
    """One painted region in image coordinates: class (-1 for clutter), covered pixels and their colours."""

    cls: int
    x0: int
    y0: int
    mask: np.ndarray  # bool [h, w], clipped to the image
    pixels: np.ndarray  # uint8 [h, w, 3] BGR
    area: int  # covered pixels before clipping to the image


# ---- colours and fills ----------------------------------------------------------------------------------

def random_colour(rng: np.random.Generator, saturation=(0.0, 1.0), value=(0.1, 1.0)) -> np.ndarray:
    """A BGR float32 colour drawn uniformly in hue and in the given saturation and value ranges."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb[::-1], np.float32) * 255


def ramp(height: int, width: int, angle: float) -> np.ndarray:
    """Float32 [h, w] going linearly from 0 to 1 along direction `angle` (radians)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    return (along - along.min()) / max(float(np.ptp(along)), 1.0)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, channels: int = 1):
    """Float32 [h, w, channels] in about -1..1, varying over roughly `cells` cells across the image."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1, channels)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)


def mix(first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per pixel blend of two colours by a [h, w] weight in 0..1 -> float32 [h, w, 3]."""
    return first + (second - first) * weight[..., None]


def fill_solid(rng, height, width, colour):
    """One flat colour."""
    return np.broadcast_to(colour, (height, width, 3))


def fill_stripes(rng, height, width, colour):
    """Parallel stripes of the colour and a second one, at a random angle and period."""
    phase = ramp(height, width, rng.uniform(0, math.pi)) * max(height, width) / rng.uniform(3, 12)
    weight = (np.sin(phase * 2 * math.pi) > 0).astype(np.float32)
    return mix(colour, random_colour(rng), weight)


def fill_gradient(rng, height, width, colour):
    """A linear gradient from the colour to a second one."""
    return mix(colour, random_colour(rng), ramp(height, width, rng.uniform(0, 2 * math.pi)))


def fill_mottled(rng, height, width, colour):
    """The colour with blotchy per channel noise on it."""
    cells = int(rng.integers(2, 8))
    return colour + smooth_noise(rng, height, width, cells, 3) * rng.uniform(20, 60)


FILLS = (fill_solid, fill_stripes, fill_gradient, fill_mottled)


def texture(rng: np.random.Generator, height: int, width: int, colour: np.ndarray) -> np.ndarray:
    """A uint8 [h, w, 3] patch filled with one of FILLS around `colour`."""
    fill = FILLS[int(rng.integers(len(FILLS)))]
    return np.clip(fill(rng, height, width, colour), 0, 255).astype(np.uint8)


# ---- shapes ---------------------------------------------------------------------------------------------

def regular_polygon(corners: int, start: float) -> np.ndarray:
    """Unit circle sampled at `corners` evenly spaced angles from `start`."""
    angles = start + np.arange(corners) * 2 * math.pi / corners
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def unit_circle(rng):
    """A circle, very slightly squashed."""
    return regular_polygon(48, 0.0) * [1.0, rng.uniform(0.85, 1.0)]


def unit_triangle(rng):
    """A triangle, equilateral up to a squash along its axis."""
    return regular_polygon(3, -math.pi / 2) * [1.0, rng.uniform(0.75, 1.25)]


def unit_square(rng):
    """A square, up to a mild aspect change."""
    return regular_polygon(4, math.pi / 4) * [1.0, rng.uniform(0.8, 1.0)]


def unit_star(rng):
    """A five-pointed star with a random inner radius."""
    outer = regular_polygon(5, -math.pi / 2)
    inner = regular_polygon(5, -math.pi / 2 + math.pi / 5) * rng.uniform(0.35, 0.55)
    return np.stack([outer, inner], 1).reshape(-1, 2)


def unit_cross(rng):
    """A plus sign with arms of random thickness."""
    t = rng.uniform(0.22, 0.4)
    quarter = np.array([[t, t], [1, t], [1, -t]])
    turns = [quarter @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
             for a in np.arange(4) * math.pi / 2]
    return np.concatenate(turns)


SHAPES = (unit_circle, unit_triangle, unit_square, unit_star, unit_cross)


def shape_polygon(cls: int, rng: np.random.Generator, centre, radius: float, angle: float) -> np.ndarray:
    """Outline of class `cls` with the given centre, radius (px) and rotation (radians) -> float [N, 2]."""
    unit = SHAPES[cls](rng)
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return unit @ rotation * radius + np.asarray(centre, np.float64)


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [h, w] mask with the polygon (pixel coordinates of centres) filled with 1."""
    mask = np.zeros((height, width), np.uint8)
    points = np.round(polygon * (1 << SUBPIXEL)).astype(np.int32)
    cv2.fillPoly(mask, [points], 1, cv2.LINE_8, SUBPIXEL)
    return mask


def crop_to_image(x0: int, y0: int, layer: np.ndarray, width: int, height: int):
    """Cut a layer placed at (x0, y0) down to the image -> (x0, y0, layer) inside it."""
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = min(layer.shape[1], width - x0), min(layer.shape[0], height - y0)
    return x0 + left, y0 + top, layer[top:max(top, bottom), left:max(left, right)]


def place(cls: int, mask: np.ndarray, pixels: np.ndarray, x0: int, y0: int, width: int, height: int):
    """A local mask and its colours, positioned at (x0, y0) and clipped to a width x height image."""
    area = int(np.count_nonzero(mask))
    x, y, clipped = crop_to_image(x0, y0, mask.astype(bool), width, height)
    _, _, colours = crop_to_image(x0, y0, pixels, width, height)
    return Placed(cls, x, y, clipped, colours, area)


def random_object(rng: np.random.Generator, width: int, height: int, cls: int | None = None) -> Placed:
    """One target shape of random class, size (about 12-160 px at 416), rotation, place and fill."""
    cls = int(rng.integers(len(CLASSES))) if cls is None else cls
    scale = min(width, height) / 416
    radius = math.exp(rng.uniform(math.log(6.5), math.log(80))) * scale
    centre = rng.uniform(0, width), rng.uniform(0, height)
    polygon = shape_polygon(cls, rng, centre, radius, rng.uniform(0, 2 * math.pi))
    x0, y0 = np.floor(polygon.min(0)).astype(int) - 1
    x1, y1 = np.ceil(polygon.max(0)).astype(int) + 2
    mask = polygon_mask(polygon - [x0, y0], y1 - y0, x1 - x0)
    colour = random_colour(rng, saturation=(0.2, 1.0), value=(0.15, 1.0))
    return place(cls, mask, texture(rng, y1 - y0, x1 - x0, colour), x0, y0, width, height)


# ---- clutter --------------------------------------------------------------------------------------------

def draw_ellipse(rng, canvas, width, height):
    """An elongated ellipse (too thin to pass for a circle), filled or outlined."""
    size = rng.uniform(8, 0.25 * min(width, height))
    axes = (int(size), int(size * rng.uniform(0.12, 0.5)))
    centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
    thickness = -1 if rng.random() < 0.6 else int(rng.integers(1, 4))
    cv2.ellipse(canvas, centre, axes, rng.uniform(0, 180), 0, 360, 255, thickness, cv2.LINE_8)


def draw_line(rng, canvas, width, height):
    """A long straight line."""
    start = rng.uniform(0, [width, height])
    end = start + rng.uniform(-0.5, 0.5, 2) * [width, height]
    cv2.line(canvas, tuple(start.astype(int)), tuple(end.astype(int)), 255, int(rng.integers(1, 5)))


def draw_squiggle(rng, canvas, width, height):
    """A wandering pen stroke, like handwriting."""
    steps = np.cumsum(rng.normal(0, rng.uniform(3, 10), (int(rng.integers(6, 20)), 2)), 0)
    points = (steps + rng.uniform(0, [width, height])).astype(np.int32)
    cv2.polylines(canvas, [points], False, 255, int(rng.integers(1, 4)), cv2.LINE_8)


def draw_text(rng, canvas, width, height):
    """A few random lower-case letters."""
    word = "".join(rng.choice(list(LETTERS), int(rng.integers(2, 7))))
    origin = (int(rng.uniform(-20, width)), int(rng.uniform(10, height + 10)))
    cv2.putText(canvas, word, origin, cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 1.4) * width / 416, 255,
                int(rng.integers(1, 3)))


CLUTTER = (draw_ellipse, draw_line, draw_squiggle, draw_text)


def random_clutter(rng: np.random.Generator, width: int, height: int) -> Placed:
    """One non-target distractor (thin ellipse, line, squiggle or text) in a flat or graded colour."""
    canvas = np.zeros((height, width), np.uint8)
    CLUTTER[int(rng.integers(len(CLUTTER)))](rng, canvas, width, height)
    x, y, w, h = cv2.boundingRect(canvas)
    mask = canvas[y:y + h, x:x + w] > 0
    colour = random_colour(rng)
    fill = FILLS[int(rng.integers(3))] if w and h else fill_solid
    pixels = np.clip(fill(rng, h, w, colour), 0, 255).astype(np.uint8)
    return Placed(-1, x, y, mask, pixels, int(np.count_nonzero(mask)))


def paint(image: np.ndarray, layer: Placed) -> None:
    """Copy a layer's covered pixels into the image, in place."""
    h, w = layer.mask.shape
    np.copyto(image[layer.y0:layer.y0 + h, layer.x0:layer.x0 + w], layer.pixels, where=layer.mask[..., None])


def background(rng: np.random.Generator, width: int, height: int, clutter: int) -> np.ndarray:
    """A uint8 BGR backdrop: a gradient, soft blobs, noise texture and `clutter` distractors."""
    shade = ramp(height, width, rng.uniform(0, 2 * math.pi))
    base = mix(random_colour(rng, (0, 0.7)), random_colour(rng, (0, 0.7)), shade)
    blobs = np.zeros((height // 8 + 1, width // 8 + 1, 3), np.float32)
    blob_weight = np.zeros(blobs.shape[:2], np.float32)
    for _ in range(int(rng.integers(2, 9))):
        centre = (int(rng.uniform(0, blobs.shape[1])), int(rng.uniform(0, blobs.shape[0])))
        axes = tuple(int(a) for a in rng.uniform(2, 0.4 * blobs.shape[1], 2))
        angle = rng.uniform(0, 180)
        cv2.ellipse(blobs, centre, axes, angle, 0, 360, random_colour(rng).tolist(), -1)
        cv2.ellipse(blob_weight, centre, axes, angle, 0, 360, 1.0, -1)
    blobs = cv2.resize(cv2.GaussianBlur(blobs, (0, 0), 1.0), (width, height), interpolation=cv2.INTER_CUBIC)
    weight = cv2.resize(cv2.GaussianBlur(blob_weight, (0, 0), 1.0), (width, height),
                        interpolation=cv2.INTER_CUBIC) * rng.uniform(0.3, 0.9)
    image = mix(base, blobs, np.clip(weight, 0, 1))
    image += smooth_noise(rng, height, width, int(rng.integers(8, 40)), 1) * rng.uniform(5, 35)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(clutter):
        paint(image, random_clutter(rng, width, height))
    return image


# ---- scenes ---------------------------------------------------------------------------------------------

def visible_parts(layers: list[Placed], width: int, height: int) -> list[np.ndarray]:
    """Per layer painted in order, the bool [h, w] image of its pixels that no later layer covers."""
    owner = np.full((height, width), -1, np.int32)
    for index, layer in enumerate(layers):
        h, w = layer.mask.shape
        owner[layer.y0:layer.y0 + h, layer.x0:layer.x0 + w][layer.mask] = index
    return [owner == index for index in range(len(layers))]


def is_visible(layer: Placed, shown: np.ndarray) -> bool:
    """Whether enough of a target shape shows to label it."""
    pixels = int(np.count_nonzero(shown))
    return pixels >= MIN_PIXELS and pixels >= MIN_VISIBLE * layer.area


def prune_hidden(layers: list[Placed], width: int, height: int) -> tuple[list[Placed], list[tuple]]:
    """Drop mostly hidden target shapes until none is -> (kept layers, labels [(cls, x1, y1, x2, y2)])."""
    while True:
        shown = visible_parts(layers, width, height)
        hidden = [i for i, layer in enumerate(layers) if layer.cls >= 0 and not is_visible(layer, shown[i])]
        if not hidden:
            break
        layers = [layer for i, layer in enumerate(layers) if i not in hidden]
    labels = []
    for layer, part in zip(layers, shown, strict=True):
        if layer.cls >= 0:
            x, y, w, h = cv2.boundingRect(part.view(np.uint8))
            labels.append((layer.cls, x, y, x + w, y + h))
    return layers, labels


def relight(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven lighting, a colour cast, sensor noise and sometimes blur -> a new uint8 image."""
    height, width = image.shape[:2]
    gain = 1 + smooth_noise(rng, height, width, 2) * rng.uniform(0.1, 0.4)
    cast = rng.uniform(0.88, 1.12, 3).astype(np.float32) * rng.uniform(0.7, 1.2)
    lit = rng.standard_normal(image.shape, np.float32)
    lit *= rng.uniform(0, 12)
    lit += rng.uniform(-25, 25)
    lit += image * (gain * cast)
    lit = np.clip(lit, 0, 255, out=lit).astype(np.uint8)
    if rng.random() < 0.35:
        lit = cv2.GaussianBlur(lit, (0, 0), rng.uniform(0.5, 1.3))
    return lit


def render_scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, list[tuple]]:
    """One cluttered image and its labels [(cls, x1, y1, x2, y2)], all from `rng`."""
    image = background(rng, width, height, int(rng.integers(3, 14)))
    objects = [random_object(rng, width, height) for _ in range(int(rng.integers(1, 9)))]
    occluders = [random_clutter(rng, width, height) for _ in range(int(rng.integers(0, 4)))]
    layers, labels = prune_hidden(objects + occluders, width, height)
    for layer in layers:
        paint(image, layer)
    return relight(rng, image), labels


# ---- dataset --------------------------------------------------------------------------------------------

def yolo_lines(labels: list[tuple], size: int) -> str:
    """Labels as YOLO txt: `class cx cy w h`, normalised to the image size."""
    return "".join(f"{c} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                   f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}\n" for c, x1, y1, x2, y2 in labels)


def coco_document(names: list[str], labels: list[list[tuple]], size: int) -> dict:
    """A COCO detection dict for images `names[i]` with `labels[i]` (ids 1-based, category = class + 1)."""
    images = [{"id": i + 1, "file_name": name, "width": size, "height": size} for i, name in enumerate(names)]
    annotations = []
    for image_id, image_labels in enumerate(labels, 1):
        for c, x1, y1, x2, y2 in image_labels:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
    categories = [{"id": c + 1, "name": name, "supercategory": "shape"} for c, name in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one dataset image: independent of the other images and of the split sizes."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def write_split(root: Path, split: str, count: int, size: int, seed: int,
                on_image: Callable[[], None]) -> dict:
    """Render one split into `root` (images, YOLO labels, COCO json) -> its data.json entry."""
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    names, labels = [], []
    for index in range(count):
        rng = scene_rng(seed, split, index)
        image, image_labels = render_scene(rng, size, size)
        name = f"{index:06d}"
        quality = int(rng.integers(75, 96))
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        (root / "images" / split / f"{name}.jpg").write_bytes(jpeg.tobytes())
        (root / "labels" / split / f"{name}.txt").write_text(yolo_lines(image_labels, size))
        names.append(f"{name}.jpg")
        labels.append(image_labels)
        on_image()
    coco = coco_document(names, labels, size)
    (root / f"{split}.json").write_text(json.dumps(coco))
    return {"images": f"images/{split}", "labels": f"labels/{split}", "coco": f"{split}.json",
            "count": count, "objects": len(coco["annotations"])}


def make_dataset(out_dir, *, train: int = 2000, val: int = 300, test: int = 300, size: int = 416,
                 seed: int = 0, on_image: Callable[[], None] = lambda: None) -> Path:
    """Write the synthetic dataset to `out_dir` (which must not exist or be empty), all or nothing.

    `on_image` is called after each image, for progress bars.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PruneyoloError(f"{out_dir} exists and is not empty; remove it or pick another directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".partial"))
    try:
        counts = {"train": train, "val": val, "test": test}
        splits = {split: write_split(staging, split, counts[split], size, seed, on_image) for split in SPLITS}
        (staging / "classes.names").write_text("".join(f"{name}\n" for name in CLASSES))
        data = {"names": list(CLASSES), "classes": len(CLASSES), "size": size, "seed": seed,
                "names_file": "classes.names", "coco_category_id": "class index + 1", "splits": splits}
        (staging / "data.json").write_text(json.dumps(data, indent=1) + "\n")
        staging.chmod(0o755)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


# ---- camera streams -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sprite:
    """One object precomputed at ANGLES rotations: square patches, masks and tight boxes in the patch."""

    cls: int
    side: int
    pixels: np.ndarray  # uint8 [ANGLES, side, side, 3]
    masks: np.ndarray  # uint8 [ANGLES, side, side], 1 inside the object
    boxes: np.ndarray  # float32 [ANGLES, 4] (x1, y1, x2, y2) inside the patch


def make_sprite(rng: np.random.Generator, cls: int, radius: float) -> Sprite:
    """Render a class at every rotation, its texture turning with it."""
    side = math.ceil(2 * radius) + 4
    middle = (side - 1) / 2
    fill = texture(rng, side, side, random_colour(rng, saturation=(0.3, 1.0), value=(0.3, 1.0)))
    unit = shape_polygon(cls, rng, (0, 0), radius, 0.0)
    pixels, masks, boxes = [], [], []
    for step in range(ANGLES):
        degrees = step * 360 / ANGLES
        turn = cv2.getRotationMatrix2D((middle, middle), degrees, 1.0)
        pixels.append(cv2.warpAffine(fill, turn, (side, side), borderMode=cv2.BORDER_REFLECT))
        polygon = unit @ turn[:, :2].T + middle
        mask = polygon_mask(polygon, side, side)
        x, y, w, h = cv2.boundingRect(mask)
        masks.append(mask)
        boxes.append((x, y, x + w, y + h))
    return Sprite(cls, side, np.stack(pixels), np.stack(masks), np.array(boxes, np.float32))


class SceneStream:
    """An endless synthetic camera: textured shapes drifting, bouncing and turning over a fixed backdrop.

    `read()` -> (BGR uint8 frame [h, w, 3], float32 [K, 5] boxes (class, x1, y1, x2, y2) in pixels).
    Boxes cover whole objects, also where objects overlap each other. Deterministic by seed.
    """

    def __init__(self, seed: int, width: int = 640, height: int = 480, objects: int = 4):
        rng = np.random.default_rng([seed, len(SPLITS)])
        self.width, self.height = width, height
        self.backdrop = relight(rng, background(rng, width, height, int(rng.integers(4, 12))))
        classes = rng.permutation(np.resize(np.arange(len(CLASSES)), max(objects, 1)))[:objects]
        side = min(width, height)
        self.sprites = [make_sprite(rng, int(c), rng.uniform(0.04, 0.14) * side) for c in classes]
        self.sides = sides = np.array([s.side for s in self.sprites], np.float64)
        self.classes = np.array([s.cls for s in self.sprites], np.float32)
        self.sprite_boxes = np.stack([s.boxes for s in self.sprites]) if self.sprites else np.zeros((0, ANGLES, 4))
        self.low = sides / 2
        self.high = np.stack([width - sides / 2, height - sides / 2], 1)
        self.centres = rng.uniform(self.low[:, None], self.high)
        heading = rng.uniform(0, 2 * math.pi, objects)
        speeds = rng.uniform(0.8, 3.0, (objects, 1))
        self.velocities = np.stack([np.cos(heading), np.sin(heading)], 1) * speeds
        self.angles = rng.uniform(0, ANGLES, objects)
        self.spins = rng.uniform(0.1, 0.3, objects) * rng.choice([-1, 1], objects)
        noise = rng.normal(0, 3, (height + 32, width + 32, 3)) + NOISE_MEAN
        self.noise = np.clip(noise, 0, 255).astype(np.uint8)
        self.rng = rng
        self.frame_index = 0

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The next frame and its boxes."""
        noise_x, noise_y, jitter = self.rng.random(3)  # one draw: a call costs more than the numbers
        noise_x, noise_y = int(noise_x * 32), int(noise_y * 32)
        noise = self.noise[noise_y:noise_y + self.height, noise_x:noise_x + self.width]
        frame = cv2.add(self.backdrop, noise)  # one pass makes the frame; the objects get the same noise below
        steps = self.angles.astype(np.int64) % ANGLES
        corners = np.round(self.centres - self.sides[:, None] / 2).astype(np.int64)
        for sprite, step, (x0, y0) in zip(self.sprites, steps.tolist(), corners.tolist(), strict=True):
            window = np.s_[y0:y0 + sprite.side, x0:x0 + sprite.side]
            cv2.add(sprite.pixels[step], noise[window], dst=frame[window], mask=sprite.masks[step])
        boxes = np.empty((len(self.sprites), 5), np.float32)
        boxes[:, 0] = self.classes
        boxes[:, 1:] = self.sprite_boxes[np.arange(len(steps)), steps] + np.tile(corners, 2)
        self.flicker(frame, 3 * jitter - 1.5)
        self.advance()
        return frame, boxes

    def flicker(self, frame: np.ndarray, jitter: float) -> None:
        """Brighten or darken the whole frame by a few levels in place (saturating), as auto-exposure drifts; it
        also takes the noise's mean back out."""
        darken = NOISE_MEAN - round(4 * math.sin(self.frame_index * 0.21) + jitter)
        if darken:
            (cv2.subtract if darken > 0 else cv2.add)(frame, (abs(darken),) * 3 + (0,), dst=frame)

    def advance(self) -> None:
        """Move every object one frame on, bouncing off the frame edges."""
        self.frame_index += 1
        self.centres += self.velocities
        below, above = self.centres < self.low[:, None], self.centres > self.high
        self.velocities[below | above] *= -1
        self.centres = np.clip(self.centres, self.low[:, None], self.high)
        self.angles += self.spins


def write_videos(out_dir, *, streams: int = 4, frames: int = 300, width: int = 640, height: int = 480,
                 fps: int = 25, seed: int = 0, on_frame: Callable[[], None] = lambda: None) -> list[Path]:
    """Record `cam{i}.mp4` with `cam{i}.jsonl` (one line per frame) from SceneStream(seed + i)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for camera in range(streams):
        stream = SceneStream(seed + camera, width, height)
        video = out_dir / f"cam{camera}.mp4"
        partial = out_dir / f".cam{camera}.partial.mp4"
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise PruneyoloError(f"{video}: OpenCV cannot write mp4v video here")
        lines = []
        try:
            for index in range(frames):
                frame, boxes = stream.read()
                writer.write(frame)
                lines.append(json.dumps({"frame": index, "boxes": [box_record(row) for row in boxes]}) + "\n")
                on_frame()
            writer.release()
            atomic_write(out_dir / f"cam{camera}.jsonl", "".join(lines))
            os.replace(partial, video)
        except BaseException:
            writer.release()
            partial.unlink(missing_ok=True)
            raise
        paths.append(video)
    return paths


def box_record(row: np.ndarray) -> dict:
    """One SceneStream box row as a JSON-ready dict."""
    cls = int(row[0])
    return {"class": cls, "name": CLASSES[cls], "box": [round(float(v), 2) for v in row[1:]]}
