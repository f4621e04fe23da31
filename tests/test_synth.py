"""The synthetic shapes task: deterministic files, tight consistent labels, smooth camera streams."""

import copy
import json
import math

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pruneyolo.cli.main import main
from pruneyolo.data.synth import (
    ANGLES,
    CLASSES,
    NOISE_MEAN,
    SPLITS,
    SceneStream,
    make_dataset,
    paint,
    place,
    prune_hidden,
    random_object,
    write_videos,
)
from pruneyolo.errors import PruneyoloError

SMALL = {"train": 16, "val": 4, "test": 4}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth") / "shapes", **SMALL, seed=0)


def all_files(root):
    """Relative path -> bytes, for every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def yolo_labels(root, split):
    """{file number: float array [K, 5]} from the YOLO txt files of a split."""
    return {int(p.stem): np.loadtxt(p, ndmin=2).reshape(-1, 5)
            for p in sorted((root / "labels" / split).glob("*.txt"))}


def test_layout(dataset):
    data = json.loads((dataset / "data.json").read_text())
    assert (dataset / "classes.names").read_text().split() == list(CLASSES) == data["names"]
    for split in SPLITS:
        entry = data["splits"][split]
        assert entry["count"] == SMALL[split]
        assert len(list((dataset / entry["images"]).glob("*.jpg"))) == SMALL[split]
        assert len(list((dataset / entry["labels"]).glob("*.txt"))) == SMALL[split]
        assert (dataset / entry["coco"]).is_file()
    image = cv2.imread(str(dataset / "images" / "train" / "000000.jpg"))
    assert image.shape == (416, 416, 3)
    assert not list(dataset.parent.glob(".*partial"))


def test_same_seed_same_bytes_other_seed_other_data(dataset, tmp_path):
    again = make_dataset(tmp_path / "again", **SMALL, seed=0)
    assert all_files(again) == all_files(dataset)
    other = all_files(make_dataset(tmp_path / "other", **SMALL, seed=1))
    mine = all_files(dataset)
    assert other["labels/train/000000.txt"] != mine["labels/train/000000.txt"]
    assert other["images/val/000000.jpg"] != mine["images/val/000000.jpg"]


def test_split_contents_do_not_depend_on_split_sizes(dataset, tmp_path):
    bigger = make_dataset(tmp_path / "bigger", train=20, val=1, test=0, seed=0)
    first_val = all_files(dataset / "labels" / "val")["000000.txt"]
    assert all_files(bigger / "labels" / "val") == {"000000.txt": first_val}


def test_yolo_labels_inside_image_and_equal_to_coco(dataset):
    for split in SPLITS:
        coco = json.loads((dataset / f"{split}.json").read_text())
        by_image = {}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["area"] == w * h and ann["iscrowd"] == 0
            by_image.setdefault(ann["image_id"], []).append(
                [ann["category_id"] - 1, (x + w / 2) / 416, (y + h / 2) / 416, w / 416, h / 416])
        for number, labels in yolo_labels(dataset, split).items():
            assert coco["images"][number]["file_name"] == f"{number:06d}.jpg"
            assert coco["images"][number]["id"] == number + 1
            expected = np.array(by_image.get(number + 1, []), np.float64).reshape(-1, 5)
            np.testing.assert_allclose(labels, expected, atol=1e-6)
            boxes = labels[:, 1:]
            assert np.all(boxes[:, 2:] > 0)
            assert np.all(boxes[:, :2] - boxes[:, 2:] / 2 >= -1e-6)
            assert np.all(boxes[:, :2] + boxes[:, 2:] / 2 <= 1 + 1e-6)


def test_every_class_appears(dataset):
    found = np.concatenate(list(yolo_labels(dataset, "train").values()))[:, 0]
    assert set(found.astype(int)) == set(range(len(CLASSES)))


def test_coco_json_loads_and_scores_itself_perfectly(dataset):
    gt = COCO(str(dataset / "val.json"))
    assert sorted(gt.getCatIds()) == [1, 2, 3, 4, 5]
    detections = [dict(ann, score=1.0) for ann in gt.loadAnns(gt.getAnnIds())]
    evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)


@pytest.mark.parametrize("cls", range(len(CLASSES)))
def test_box_is_tight_around_the_painted_shape(cls):
    for seed in range(6):
        flat = np.full((416, 416, 3), (1, 2, 3), np.uint8)
        shape = random_object(np.random.default_rng(seed), 416, 416, cls)
        paint(flat, shape)
        ys, xs = np.nonzero((flat != (1, 2, 3)).any(-1))
        _, labels = prune_hidden([shape], 416, 416)  # these seeds put at least 60% of each shape inside
        assert labels == [(cls, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]


def square(cls, x0, y0, side):
    """A flat square layer for occlusion tests."""
    return place(cls, np.ones((side, side), np.uint8), np.zeros((side, side, 3), np.uint8), x0, y0, 100, 100)


def test_mostly_hidden_objects_are_removed_and_boxes_cover_only_visible_parts():
    hidden, half, cover = square(0, 10, 10, 20), square(1, 50, 50, 20), square(-1, 5, 5, 30)
    partial_cover = square(-1, 60, 40, 30)
    layers, labels = prune_hidden([hidden, half, cover, partial_cover], 100, 100)
    assert labels == [(1, 50, 50, 60, 70)]
    assert hidden not in layers and half in layers
    assert prune_hidden([square(0, -18, 10, 20)], 100, 100)[1] == []  # 10% inside the image: dropped
    assert prune_hidden([square(0, -8, 10, 20)], 100, 100)[1] == [(0, 0, 10, 12, 30)]  # 60% inside: clipped


def test_interrupted_run_leaves_nothing(tmp_path):
    made = []

    def stop_after_two():
        made.append(1)
        if len(made) > 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_dataset(tmp_path / "broken", train=5, val=0, test=0, on_image=stop_after_two)
    assert len(made) == 3
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_is_not_overwritten(dataset):
    with pytest.raises(PruneyoloError, match="not empty"):
        make_dataset(dataset, train=1, val=0, test=0)


def test_scene_stream_is_deterministic_and_returns_fresh_frames():
    first, second, other = SceneStream(3), SceneStream(3), SceneStream(4)
    frame, boxes = first.read()
    assert np.array_equal(second.read()[0], frame)
    kept = frame.copy()
    for _ in range(3):
        a, a_boxes = first.read()
        b, b_boxes = second.read()
        assert np.array_equal(a, b) and np.array_equal(a_boxes, b_boxes)
    assert np.array_equal(frame, kept)
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert boxes.shape == (4, 5) and boxes.dtype == np.float32
    assert not np.array_equal(other.read()[1], boxes)


def numpy_scene_frame(stream: SceneStream) -> tuple[np.ndarray, np.ndarray]:
    """The next frame of `stream` (advanced) and its boxes, composited with numpy alone, one object at a time:
    SceneStream.read's twin."""
    noise_x, noise_y, jitter = stream.rng.random(3)
    frame = stream.backdrop.copy()
    boxes = []
    for index, sprite in enumerate(stream.sprites):
        step = int(stream.angles[index]) % ANGLES
        x0, y0 = (int(v) for v in np.round(stream.centres[index] - sprite.side / 2))
        region = frame[y0:y0 + sprite.side, x0:x0 + sprite.side]
        np.copyto(region, sprite.pixels[step], where=sprite.masks[step].astype(bool)[..., None])
        boxes.append([sprite.cls, *(sprite.boxes[step].astype(np.float64) + [x0, y0, x0, y0])])
    x, y = int(noise_x * 32), int(noise_y * 32)
    noisy = np.minimum(frame.astype(np.int32) + stream.noise[y:y + stream.height, x:x + stream.width], 255)
    drift = round(4 * math.sin(stream.frame_index * 0.21) + 3 * jitter - 1.5)
    stream.advance()
    return np.clip(noisy - NOISE_MEAN + drift, 0, 255).astype(np.uint8), np.array(boxes, np.float32)


def test_scene_stream_frames_equal_a_numpy_compositing():
    stream = SceneStream(5, 320, 240, objects=12)
    for _ in range(6):
        twin = copy.deepcopy(stream)
        frame, boxes = stream.read()
        twin_frame, twin_boxes = numpy_scene_frame(twin)
        assert np.array_equal(frame, twin_frame) and np.array_equal(boxes, twin_boxes)
    assert (frame != stream.backdrop).any(axis=-1).mean() > 0.5


def test_scene_stream_boxes_move_smoothly_and_stay_in_frame():
    stream = SceneStream(7, width=320, height=240, objects=6)
    tracks = np.stack([stream.read()[1] for _ in range(400)])
    assert np.all(tracks[..., 0] == tracks[0, :, 0])
    boxes = tracks[..., 1:]
    assert boxes[..., [0, 1]].min() >= 0 and boxes[..., 2].max() <= 320 and boxes[..., 3].max() <= 240
    assert np.all(boxes[..., 2:] > boxes[..., :2])
    assert np.abs(np.diff(boxes, axis=0)).max() <= 10
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    assert np.all(np.ptp(centres, axis=0).max(-1) > 20)


def test_scene_stream_box_matches_the_drawn_object():
    stream = SceneStream(11, objects=1)
    frame, boxes = stream.read()
    changed = np.abs(frame.astype(int) - stream.backdrop).max(-1) > 30
    ys, xs = np.nonzero(changed)
    drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert np.abs(drawn - boxes[0, 1:]).max() <= 1


def test_write_videos_matches_the_stream(tmp_path):
    paths = write_videos(tmp_path, streams=2, frames=6, width=160, height=120, seed=5)
    assert [p.name for p in paths] == ["cam0.mp4", "cam1.mp4"]
    capture = cv2.VideoCapture(str(paths[1]))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 6
    lines = [json.loads(line) for line in (tmp_path / "cam1.jsonl").read_text().splitlines()]
    stream = SceneStream(6, 160, 120)
    for index, line in enumerate(lines):
        boxes = stream.read()[1]
        assert line["frame"] == index
        assert [b["class"] for b in line["boxes"]] == boxes[:, 0].astype(int).tolist()
        np.testing.assert_allclose([b["box"] for b in line["boxes"]], boxes[:, 1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam0.jsonl", "cam0.mp4", "cam1.jsonl", "cam1.mp4"]


def test_cli_writes_dataset_and_videos(tmp_path):
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "out"), "--train", "2", "--val", "1",
                                       "--test", "1", "--size", "128", "--videos", "1", "--frames", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "data.json").read_text())["size"] == 128
    assert (tmp_path / "out" / "videos" / "cam0.mp4").is_file()
    again = CliRunner().invoke(main, ["synth", str(tmp_path / "out"), "--train", "1"])
    assert again.exit_code == 2 and "not empty" in again.output
