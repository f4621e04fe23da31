"""Train a cfg's module on a YOLO-txt dataset: samples, augmentation, sparsity (L1 on BN gamma), the loop.

Boxes inside this module are pixels of the network input. Targets are rows (image in batch, class, cx, cy,
w, h); pruneyolo.train.loss turns raw head outputs and targets into the loss of the graph's head type.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from pruneyolo.accuracy import evaluate, to_tensor, torch_predictor
from pruneyolo.darknet.graph import Graph
from pruneyolo.darknet.weights import DarknetWeights, weights_bytes
from pruneyolo.data.dataset import Sample, load_split, pixel_boxes, read_image
from pruneyolo.errors import PruneyoloError
from pruneyolo.files import atomic_write
from pruneyolo.nn.build import DarknetModel, build_model, export_weights, module_name
from pruneyolo.prune.pruning import channel_constraints
from pruneyolo.prune.report import plot_gammas
from pruneyolo.train.loss import criterion

FILL = 114  # grey for pixels the augmentation uncovers
MIN_BOX_PX = 2.0  # augmented boxes narrower or lower than this are dropped
MIN_BOX_KEPT = 0.3  # ... and so are boxes with less than this fraction left inside the image


# ---- augmentation ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Augment:
    """Random zoom in 1 +- scale, shift up to +-translate of the side, flips, and HSV gains 1 +- hsv."""

    scale: float = 0.4
    translate: float = 0.15
    flip_lr: float = 0.5
    flip_ud: float = 0.5
    hsv: tuple[float, float, float] = (0.015, 0.5, 0.35)


NO_AUGMENT = Augment(0.0, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0))


def affine_matrix(source: tuple[int, int], target: tuple[int, int], zoom: float, shift: tuple[float, float],
                  flip: tuple[bool, bool]) -> np.ndarray:
    """2x3 matrix: resize (w, h) `source` to `target`, zoom about the centre, shift (px), flip x/y."""
    scale_x = target[0] / source[0] * zoom * (-1 if flip[0] else 1)
    scale_y = target[1] / source[1] * zoom * (-1 if flip[1] else 1)
    centre_x, centre_y = source[0] / 2, source[1] / 2
    return np.array([[scale_x, 0, target[0] / 2 + shift[0] - scale_x * centre_x],
                     [0, scale_y, target[1] / 2 + shift[1] - scale_y * centre_y]], np.float64)


def centre_matrix(matrix: np.ndarray) -> np.ndarray:
    """The same axis-aligned map for pixel centres (what cv2.warpAffine uses) rather than pixel edges."""
    result = matrix.copy()
    result[:, 2] += 0.5 * np.diag(matrix[:, :2]) - 0.5
    return result


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """xyxy boxes [K, 4] through an axis-aligned affine matrix (flips swap the corners back into order)."""
    xs = boxes[:, [0, 2]] * matrix[0, 0] + matrix[0, 2]
    ys = boxes[:, [1, 3]] * matrix[1, 1] + matrix[1, 2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bool mask of boxes that stay large enough inside the image; `boxes` is clipped in place."""
    before = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    sides = boxes[:, 2:] - boxes[:, :2]
    return (sides.min(1) >= MIN_BOX_PX) & (np.prod(sides, 1) >= MIN_BOX_KEPT * np.maximum(before, 1e-9))


def hsv_jitter(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Hue, saturation and value multiplied by `gains` (three factors around 1), through lookup tables."""
    hue, saturation, value = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    levels = np.arange(256, dtype=np.float32)
    tables = [(levels * gains[0]) % 180, np.clip(levels * gains[1], 0, 255), np.clip(levels * gains[2], 0, 255)]
    channels = [cv2.LUT(channel, table.astype(np.uint8)) for channel, table in zip((hue, saturation, value), tables, strict=True)]
    return cv2.cvtColor(cv2.merge(channels), cv2.COLOR_HSV2BGR)


def load_sample(sample: Sample, size: tuple[int, int], augment: Augment,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An image warped to `size` (w, h) with random augmentation -> (BGR uint8, [K, 5] class + xyxy px)."""
    image = read_image(sample.image)
    source = (image.shape[1], image.shape[0])
    zoom = 1 + rng.uniform(-augment.scale, augment.scale)
    shift = tuple(rng.uniform(-augment.translate, augment.translate, 2) * size)
    flip = (bool(rng.random() < augment.flip_lr), bool(rng.random() < augment.flip_ud))
    matrix = affine_matrix(source, size, zoom, shift, flip)
    if augment == NO_AUGMENT:
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    else:
        image = cv2.warpAffine(image, centre_matrix(matrix), size, flags=cv2.INTER_LINEAR, borderValue=(FILL, FILL, FILL))
    if any(augment.hsv):
        image = hsv_jitter(image, 1 + rng.uniform(-1, 1, 3) * augment.hsv)
    boxes = warp_boxes(pixel_boxes(sample.labels, *source), matrix)
    kept = clip_boxes(boxes, *size)
    return image, np.concatenate([sample.labels[kept, :1], boxes[kept]], 1).astype(np.float32)


def to_targets(boxes: list[np.ndarray]) -> torch.Tensor:
    """Per image [K, 5] (class, xyxy) -> one [M, 6] tensor (image in batch, class, cx, cy, w, h)."""
    rows = [np.concatenate([np.full((len(b), 1), i), b[:, :1], (b[:, 1:3] + b[:, 3:5]) / 2, b[:, 3:5] - b[:, 1:3]],
                           1) for i, b in enumerate(boxes)]
    return torch.from_numpy(np.concatenate(rows).astype(np.float32)) if rows else torch.zeros(0, 6)


def batches(samples: list[Sample], batch: int, size: tuple[int, int], augment: Augment,
            rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled (images, targets) batches; a last batch of one image is dropped (BatchNorm)."""
    order = rng.permutation(len(samples))
    for start in range(0, len(order), batch):
        chosen = order[start:start + batch]
        if len(chosen) < 2:
            break
        images, boxes = zip(*(load_sample(samples[i], size, augment, rng) for i in chosen), strict=True)
        yield to_tensor(list(images)), to_targets(list(boxes))


# ---- sparsity -------------------------------------------------------------------------------------------

def sparsity_layers(model: DarknetModel, graph: Graph) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers `prune` would consider (its tie and freeze rules): they get the L1 penalty."""
    return [getattr(model, module_name(graph.nodes[index])).bn for index in channel_constraints(graph).prunable]


def sparsity_rate(sparsity: float, epoch: int, epochs: int, decay: float = 0.9) -> float:
    """The seed schedule: sr * (1 - decay * epoch / epochs), epoch counted from 0 (decay 0: constant)."""
    return sparsity * (1 - decay * epoch / epochs)


def add_l1_gradient(layers: list[nn.BatchNorm2d], rate: float) -> None:
    """Add the L1 subgradient rate * sign(gamma) to each layer's gamma gradient (after backward)."""
    for layer in layers:
        layer.weight.grad.add_(torch.sign(layer.weight.detach()), alpha=rate)


@torch.no_grad()
def shrink_gammas(layers: list[nn.BatchNorm2d], amount: float) -> None:
    """The L1 proximal step (after the optimiser's): |gamma| -= amount, stopping at exactly 0."""
    for layer in layers:
        layer.weight.copy_(torch.sign(layer.weight) * (layer.weight.abs() - amount).clamp(min=0))


# ---- optimisation ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run is configured by."""

    epochs: int = 10
    batch: int = 16
    lr: float = 2e-3
    optimizer: str = "adamw"  # 'adamw' | 'sgd'
    weight_decay: float = 0.01  # conv kernels only, never BN or biases
    warmup: int = 200  # steps of linear warm-up
    final_lr: float = 0.05  # cosine decays to lr * final_lr
    sparsity: float = 0.0
    sparsity_step: str = "proximal"  # 'proximal': shrink |gamma| by lr * rate after each step | 'subgradient'
    sparsity_decay: float = 0.9  # the rate falls linearly to (1 - decay) of SR over the run; 0 keeps it constant
    gamma_lr: float = 0.0  # > 0: the penalised gammas train by SGD at this lr (same schedule)
    ema: bool = True
    augment: Augment = Augment()
    seed: int = 0
    limit: int | None = None  # train on the first N images only
    val_split: str | None = None  # score the EMA model on this split after every epoch (mAP50 in the log)
    plateau: float | None = None  # with val_split: stop once val mAP50 rose less than this over 2 epochs


def make_optimizer(model: nn.Module, options: TrainOptions,
                   apart: tuple[nn.Parameter, ...] = ()) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW for all parameters but `apart`; decay on conv kernels only."""
    skipped = {id(p) for p in apart}
    kernels = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1 and id(p) not in skipped]
    groups = [{"params": kernels, "weight_decay": options.weight_decay}, {"params": others, "weight_decay": 0.0}]
    if options.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=options.lr, momentum=0.9, nesterov=True)
    if options.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.999))
    raise PruneyoloError(f"optimizer {options.optimizer!r}: choose adamw or sgd")


def gamma_optimizer(layers: list[nn.BatchNorm2d], options: TrainOptions) -> torch.optim.SGD | None:
    """Plain SGD for the penalised gammas when options.gamma_lr is set. Unlike Adam it keeps the size of each
    gamma's gradient, so with the proximal step a gamma settles where |gradient| = rate or at exactly 0."""
    if not (options.gamma_lr and layers):
        return None
    return torch.optim.SGD([layer.weight for layer in layers], lr=options.gamma_lr)


def learning_rate(step: int, steps: int, options: TrainOptions) -> float:
    """Linear warm-up, then cosine from lr down to lr * final_lr at the last step."""
    if step < options.warmup:
        return options.lr * (step + 1) / options.warmup
    progress = (step - options.warmup) / max(1, steps - options.warmup)
    return options.lr * (options.final_lr + (1 - options.final_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


class Ema:
    """Exponential moving average of a model's parameters and buffers, decay ramping up to `decay`."""

    def __init__(self, model: nn.Module, decay: float = 0.998, ramp: float = 300.0):
        self.model = copy.deepcopy(model).eval()
        self.decay, self.ramp, self.updates = decay, ramp, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.decay * (1 - math.exp(-self.updates / self.ramp))
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if mine.dtype.is_floating_point:
                mine.mul_(decay).add_(theirs.detach(), alpha=1 - decay)
            else:
                mine.copy_(theirs)


def reached_plateau(records: list[dict], rise: float | None) -> bool:
    """Whether val mAP50 rose by less than `rise` over the last 2 epochs (never before 3 scored epochs)."""
    scores = [record["val_mAP50"] for record in records if "val_mAP50" in record]
    return rise is not None and len(scores) >= 3 and scores[-1] - scores[-3] < rise


# ---- the loop -------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """The trained module (EMA if enabled), its weights, and per-step losses and per-epoch records."""

    model: DarknetModel
    weights: DarknetWeights
    weights_path: Path
    losses: list[float] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)


def output_paths(out_dir, cfg_path: str) -> tuple[Path, Path, Path]:
    """(<stem>.weights, <stem>.pt checkpoint, train_log.jsonl) in the output directory."""
    out_dir, stem = Path(out_dir), Path(cfg_path).stem
    return out_dir / f"{stem}.weights", out_dir / f"{stem}.pt", out_dir / "train_log.jsonl"


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    options: TrainOptions) -> None:
    """A torch checkpoint (module state, optimizer state, epoch, options), written atomically."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "options": asdict(options)}, buffer)
    atomic_write(path, buffer.getvalue())


def gamma_fraction_below(layers: list[nn.BatchNorm2d], level: float) -> float:
    """Fraction of the penalised channels with |gamma| below `level`."""
    gammas = torch.cat([layer.weight.detach().abs() for layer in layers])
    return float((gammas < level).float().mean()) if len(gammas) else 0.0


def check_label_classes(samples: list[Sample], classes: int) -> None:
    """Refuse a dataset whose labels name a class the model's heads do not have."""
    for sample in samples:
        if len(sample.labels) and sample.labels[:, 0].max() >= classes:
            raise PruneyoloError(f"{sample.image}: label class {int(sample.labels[:, 0].max())} but the model has "
                                 f"{classes} classes; train a model with as many classes as the dataset")


def train(graph: Graph, weights: DarknetWeights | None, data_dir, out_dir, options: TrainOptions = TrainOptions(),
          log: Callable[[str], None] = print) -> TrainResult:
    """Train on the dataset's train split; write .weights, checkpoint, log (and |gamma| PNGs with sparsity)."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    samples = load_split(data_dir, "train")[:options.limit]
    if len(samples) < 2:
        raise PruneyoloError(f"{data_dir}: the train split needs at least 2 images")
    check_label_classes(samples, min(head.classes for head in graph.heads))
    model = build_model(graph, weights).train().to(memory_format=torch.channels_last)
    loss_of = criterion(graph)
    penalised = sparsity_layers(model, graph) if options.sparsity else []
    if options.sparsity_step not in ("proximal", "subgradient"):
        raise PruneyoloError(f"sparsity step {options.sparsity_step!r}: choose proximal or subgradient")
    proximal = options.sparsity_step == "proximal"
    gammas_sgd = gamma_optimizer(penalised, options)
    optimizer = make_optimizer(model, options, tuple(layer.weight for layer in penalised) if gammas_sgd else ())
    ema = Ema(model) if options.ema else None
    size = (graph.input_shape[2], graph.input_shape[1])
    steps_per_epoch = sum(1 for start in range(0, len(samples), options.batch) if len(samples) - start >= 2)
    steps = steps_per_epoch * options.epochs
    weights_path, checkpoint_path, log_path = output_paths(out_dir, graph.path)
    result = TrainResult(model, DarknetWeights(), weights_path)
    step, seen, lines = 0, 0, []
    for epoch in range(options.epochs):
        started, parts_sum = time.perf_counter(), {}
        rate = sparsity_rate(options.sparsity, epoch, options.epochs, options.sparsity_decay)
        for images, targets in batches(samples, options.batch, size, options.augment, rng):
            lr = learning_rate(step, steps, options)
            for group in optimizer.param_groups:
                group["lr"] = lr
            gamma_lr = lr * options.gamma_lr / options.lr if gammas_sgd else lr
            if gammas_sgd:
                gammas_sgd.param_groups[0]["lr"] = gamma_lr
            loss, parts = loss_of(model(images), targets)
            if not torch.isfinite(loss):
                raise PruneyoloError(f"loss became {float(loss)} at step {step}; lower --lr")
            model.zero_grad(set_to_none=True)
            loss.backward()
            if not proximal:
                add_l1_gradient(penalised, rate)
            optimizer.step()
            if gammas_sgd:
                gammas_sgd.step()
            if proximal:
                shrink_gammas(penalised, gamma_lr * rate)
            if ema:
                ema.update(model)
            result.losses.append(float(loss.detach()))
            parts_sum = {k: parts_sum.get(k, 0.0) + v for k, v in parts.items()}
            step, seen = step + 1, seen + len(images)
        final = ema.model if ema else model
        result.model, result.weights = final, export_weights(final, graph, seen)
        atomic_write(weights_path, weights_bytes(graph, result.weights))
        save_checkpoint(checkpoint_path, model, optimizer, epoch, options)
        seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "loss": float(np.mean(result.losses[-steps_per_epoch:])),
                  **{k: v / steps_per_epoch for k, v in parts_sum.items()},
                  "lr": optimizer.param_groups[0]["lr"], "sparsity": rate, "seconds": round(seconds, 1),
                  "images_per_s": round(steps_per_epoch * options.batch / seconds, 1)}
        if options.sparsity:
            record["gamma_below_0.01"] = gamma_fraction_below(sparsity_layers(final, graph), 0.01)
            record["gamma_zero"] = gamma_fraction_below(penalised, 1e-12)
            plot_gammas(graph, result.weights, Path(out_dir) / "gammas" / f"epoch_{epoch + 1:03d}.png")
        if options.val_split:
            metrics = evaluate(torch_predictor(graph, result.weights), data_dir, options.val_split)
            record.update({"val_mAP50": round(metrics.map50, 4), "val_mAP50-95": round(metrics.map50_95, 4),
                           "val_seconds": round(metrics.seconds, 1)})
        result.epochs.append(record)
        lines.append(json.dumps(record) + "\n")
        atomic_write(log_path, "".join(lines))
        log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        if reached_plateau(result.epochs, options.plateau):
            log(f"val mAP50 rose {result.epochs[-1]['val_mAP50'] - result.epochs[-3]['val_mAP50']:+.4f} over the "
                f"last 2 epochs (under {options.plateau:g}): stopping")
            break
    result.model = result.model.to(memory_format=torch.contiguous_format).eval()
    return result
