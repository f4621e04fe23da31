"""Training an anchor-free ([detect]) graph: the task-aligned assigner on a hand-made case, the DFL of a known
distribution, the loss on a tiny overfit set, and a `train --sparsity` whose output prunes exactly."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yolov8_support as y8
from click.testing import CliRunner
from prune_support import zero_cut_channels

from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import read_weights
from pruneyolo.data.synth import make_dataset
from pruneyolo.nn.build import DecodedModel, build_model
from pruneyolo.prune.pruning import channel_constraints, channel_masks, prune
from pruneyolo.train.loss import (
    AlignedGains,
    anchor_free_heads,
    anchor_free_loss,
    criterion,
    dfl_loss,
    task_aligned_assign,
)
from pruneyolo.train.trainer import NO_AUGMENT, TrainOptions, train
from pruneyolo.yolov5.source import import_checkpoint

SIZE = (64, 64)
CLASSES = 5  # the synthetic set's

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A pruned YOLOv8 with odd widths (C2f_v2, uneven C2f splits), gammas spread over 0.2..1."""
    path = tmp_path_factory.mktemp("ckpt") / "v8.pt"
    torch.save({"model": y8.randomize(y8.pruned_v8_layout(CLASSES), 7)}, path)
    return path


@pytest.fixture(scope="module")
def imported(checkpoint):
    graph, result = import_checkpoint(checkpoint, SIZE)
    return graph, result.weights


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train") / "shapes", train=4, val=0, test=2, size=64, seed=3)


def grid_points(width: int, height: int, stride: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2) * stride


def test_assigner_takes_top_k_inside_the_box_and_gives_a_shared_point_to_the_closer_box():
    points = grid_points(4, 4, 8)  # cell centres 4, 12, 20, 28 px; point i is row i // 4, column i % 4
    gt_boxes = torch.tensor([[[0.0, 0, 24, 16], [8, 0, 32, 16]]])  # A holds points 0-2, 4-6; B 1-3, 5-7
    gt_classes, present = torch.tensor([[0, 1]]), torch.tensor([[True, True]])
    pred = torch.stack([torch.cat([p - 0.5, p + 0.5]) for p in points])[None].clone()  # 1 px boxes: IoU ~ 0
    pred[0, 0] = gt_boxes[0, 0]  # IoU 1 with A
    pred[0, 1] = gt_boxes[0, 1]  # IoU 1 with B, 0.5 with A
    pred[0, 2] = torch.tensor([2.0, 0, 26, 16])  # IoU 0.85 with A, 0.6 with B: in both top-2s, goes to A
    pred[0, 8] = gt_boxes[0, 0]  # a perfect box, but its point (4, 20) is outside both: never a candidate
    scores = torch.full((1, 16, CLASSES), 0.5)
    boxes, target_scores, foreground = task_aligned_assign(scores, pred, points, gt_classes, gt_boxes, present,
                                                           AlignedGains(top_k=2))
    assert foreground[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert boxes[0, [0, 2]].tolist() == [gt_boxes[0, 0].tolist()] * 2 and boxes[0, 1].tolist() == gt_boxes[0, 1].tolist()
    assert target_scores[0, [0, 2], 0].gt(0).all() and target_scores[0, 1, 1] > 0
    assert int(target_scores.gt(0).sum()) == 3  # one class per foreground point, nothing elsewhere
    # a target's best point scores its IoU (1 here); the others their alignment relative to it: CIoU(2, A) ** 6
    shared = (22 * 16) / (2 * 24 * 16 - 22 * 16) - 2 ** 2 / (26 ** 2 + 16 ** 2)
    assert target_scores[0, 0, 0] == pytest.approx(1.0, abs=1e-5) and target_scores[0, 1, 1] == pytest.approx(1.0, abs=1e-5)
    assert target_scores[0, 2, 0] == pytest.approx(shared ** 6, rel=1e-4)
    boxes, _, foreground = task_aligned_assign(scores, pred, points, gt_classes, gt_boxes, present,
                                               AlignedGains(top_k=16))
    assert foreground[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # every point inside A or B
    assert boxes[0, [0, 2, 4]].tolist() == [gt_boxes[0, 0].tolist()] * 3 and boxes[0, [1, 3, 7]].tolist() == [
        gt_boxes[0, 1].tolist()] * 3


def test_assigner_with_no_targets_assigns_nothing():
    points = grid_points(2, 2, 8)
    boxes, scores, foreground = task_aligned_assign(torch.rand(2, 4, 3), torch.rand(2, 4, 4), points,
                                                    torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4),
                                                    torch.zeros(2, 0, dtype=torch.bool))
    assert not foreground.any() and not scores.any() and boxes.shape == (2, 4, 4)


def test_dfl_loss_of_a_known_distribution():
    probabilities = torch.tensor([0.1, 0.6, 0.2, 0.1])
    bins = probabilities.log().expand(1, 4, 4)
    distances = torch.tensor([[1.25, 2.0, 0.5, 0.0]])  # between bins 1 and 2 (1/4 of the way), on 2, ...
    side = [0.75 * -math.log(0.6) + 0.25 * -math.log(0.2), -math.log(0.2),
            0.5 * -math.log(0.1) + 0.5 * -math.log(0.6), -math.log(0.1)]
    assert float(dfl_loss(bins, distances)[0]) == pytest.approx(sum(side) / 4, rel=1e-6)
    sharp = torch.tensor([-9.0, 9.0, 7.9014, -9.0]).expand(1, 4, 4)  # mass 3:1 on bins 1 and 2: near the minimum
    assert dfl_loss(sharp, torch.full((1, 4), 1.25)) < dfl_loss(bins, torch.full((1, 4), 1.25))


def perfect_outputs(graph, targets: torch.Tensor, batch: int) -> tuple[list[torch.Tensor], list[float]]:
    """Raw [detect] maps whose every point inside a target predicts its box and class: each side's bins hold
    the two-bin distribution whose expectation is that side's distance, DFL's minimum. Also, per such point,
    that minimum: the mean over its sides of the two-bin entropy."""
    reg_max = anchor_free_heads(graph).reg_max
    outputs, entropies = [], []
    for head in graph.heads:
        channels, height, width = head.out_shape
        raw = torch.full((batch, channels, height, width), -18.0)
        for image, cls, cx, cy, w, h in targets.tolist():
            for row in range(height):
                for column in range(width):
                    x, y = (column + 0.5) * head.stride, (row + 0.5) * head.stride
                    sides = [x - (cx - w / 2), y - (cy - h / 2), cx + w / 2 - x, cy + h / 2 - y]
                    if min(sides) <= 0:
                        continue
                    entropy = 0.0
                    for side, distance in enumerate(sides):
                        below, part = divmod(distance / head.stride, 1.0)
                        entropy -= sum(q * math.log(q) for q in (part, 1 - part) if q > 0) / 4
                        raw[int(image), side * reg_max + int(below), row, column] = math.log(max(1 - part, 1e-8))
                        raw[int(image), side * reg_max + int(below) + 1, row, column] = math.log(max(part, 1e-8))
                    raw[int(image), 4 * reg_max + int(cls), row, column] = 18.0
                    entropies.append(entropy)
        outputs.append(raw)
    return outputs, entropies


def test_loss_is_lowest_for_outputs_on_the_targets(imported):
    graph = imported[0]
    targets = torch.tensor([[0, 1, 24.0, 24.0, 32.0, 16.0], [1, 3, 40.0, 32.0, 16.0, 32.0]])  # 9 + 10 points in
    outputs, entropies = perfect_outputs(graph, targets, 2)
    right, parts = criterion(graph)(outputs, targets)
    assert len(entropies) == 19  # all within top-10 of their target, each with IoU 1, so target score 1
    assert parts["box"] < 1e-4 and parts["cls"] < 1e-3 and parts["dfl"] == pytest.approx(np.mean(entropies), rel=1e-4)
    shifted = targets.clone()
    shifted[:, 2] += 8
    wrong, wrong_parts = anchor_free_loss(perfect_outputs(graph, shifted, 2)[0], targets, anchor_free_heads(graph))
    assert wrong_parts["box"] > 0.3 and wrong_parts["dfl"] > 4 * parts["dfl"] and wrong > 10 * right


def test_training_from_scratch_fits_a_tiny_set(imported, data, tmp_path):
    graph = imported[0]
    options = TrainOptions(epochs=8, batch=4, lr=1e-2, warmup=1, augment=NO_AUGMENT, ema=False, val_split="test")
    result = train(graph, None, data, tmp_path, options, log=lambda line: None)
    assert np.isfinite(result.losses).all() and result.losses[-1] < 0.5 * result.losses[0]
    assert set(result.epochs[-1]) >= {"box", "cls", "dfl", "val_mAP50"} and "obj" not in result.epochs[-1]
    reloaded = build_model(graph, read_weights(result.weights_path, graph))
    image = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        for mine, theirs in zip(result.model(image), reloaded(image), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def rows(graph, weights) -> np.ndarray:
    image = torch.from_numpy(np.random.default_rng(0).random((1, 3, *SIZE), dtype=np.float32))
    with torch.no_grad():
        return DecodedModel(build_model(graph, weights), graph)(image).numpy()


def test_train_sparsity_drives_gammas_down_and_the_result_prunes_exactly(checkpoint, imported, data, tmp_path):
    graph, start = imported
    prunable = channel_constraints(graph).prunable

    def run(name, *extra):
        out = tmp_path / name
        result = CliRunner().invoke(main, ["train", str(checkpoint), "--data", str(data), "-o", str(out), "--size",
                                           "64", "--epochs", "2", "--batch", "2", "--lr", "0.01", "--warmup", "1",
                                           "--no-augment", "--no-ema", "--threads", "1", *extra])
        assert result.exit_code == 0, result.output
        trained = load_graph(out / "v8.cfg")
        return trained, read_weights(out / "v8.weights", trained)

    def mean_gamma(weights):
        return np.mean([np.abs(weights.layers[i].scales).mean() for i in prunable])

    _, plain = run("plain")
    trained, sparse = run("sparse", "--sparsity", "8")
    assert mean_gamma(sparse) < 0.8 * mean_gamma(plain) and mean_gamma(plain) > 0.8 * mean_gamma(start)
    masks, _, _ = channel_masks(trained, sparse, 0.3)
    masked = copy.deepcopy(sparse)
    zero_cut_channels(masked, masks)
    expected = rows(trained, masked)
    pruned = prune(trained, masked, 0.3)
    assert pruned.graph.params < trained.params
    actual = rows(pruned.graph, pruned.weights)
    assert float(np.abs(actual - expected).max() / np.abs(expected).max()) < 1e-4
    cli = CliRunner().invoke(main, ["prune", str(tmp_path / "sparse" / "v8.cfg"), "--weights",
                                    str(tmp_path / "sparse" / "v8.weights"), "--percent", "0.3", "-o",
                                    str(tmp_path / "pruned")])
    assert cli.exit_code == 0, cli.output


def test_labels_beyond_the_model_classes_are_refused_in_one_line(data, tmp_path):
    path = tmp_path / "two.pt"
    torch.save({"model": y8.randomize(y8.pruned_v8_layout(2), 7)}, path)
    result = CliRunner().invoke(main, ["train", str(path), "--data", str(data), "-o", str(tmp_path / "out"),
                                       "--size", "64"])
    assert result.exit_code == 2 and "but the model has 2 classes" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out" / "train_log.jsonl").exists()


FIXTURE = Path(__file__).parents[2] / "shared" / "yolov8" / "fixtures" / "v11n_stock.pt"


@pytest.mark.skipif(not FIXTURE.is_file(), reason="no ../shared/yolov8 fixtures")
def test_stock_yolo11n_fine_tunes_one_short_epoch(data, tmp_path):
    result = CliRunner().invoke(main, ["train", str(FIXTURE), "--data", str(data), "-o", str(tmp_path), "--size",
                                       "64", "--epochs", "1", "--batch", "2", "--limit", "4", "--warmup", "1",
                                       "--no-augment", "--threads", "1", "--val", "test"])
    assert result.exit_code == 0, result.output
    record = (tmp_path / "train_log.jsonl").read_text().splitlines()[-1]
    assert '"dfl"' in record and '"val_mAP50"' in record
    graph = load_graph(tmp_path / "v11n_stock.cfg")
    assert graph.heads[0].classes == 80 and read_weights(tmp_path / "v11n_stock.weights", graph).layers
