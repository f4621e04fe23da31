"""Detection losses on raw head outputs, one per head type, chosen by `criterion(graph)`.

Boxes are pixels of the network input; targets are rows (image in batch, class, cx, cy, w, h).
Anchor-based [yolo] heads: each target trains every anchor (over all heads) whose width/height IoU with it
exceeds ASSIGN_IOU, and always the best one, in the grid cell holding its centre.
Anchor-free [detect] heads (YOLOv8 / YOLO11): a task-aligned assigner picks the anchor points, then
BCE on classes against the aligned scores, CIoU on boxes and Distribution Focal Loss on the distance bins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch.nn import functional as F

from pruneyolo.darknet.graph import Graph
from pruneyolo.errors import PruneyoloError
from pruneyolo.nn.layers import dfl_distances

ASSIGN_IOU = 0.25  # a target also trains every anchor whose w/h IoU with it is above this
MAX_LOG_WH = 4.0  # raw w/h logits are clamped here in the loss so exp() cannot overflow early on
BALANCE = {8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1}  # objectness weight by head stride (finer grids weigh more)

Loss = Callable[[list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


# ---- anchor-based heads ([yolo]) ------------------------------------------------------------------------

@dataclass(frozen=True)
class LossWeights:
    """Gains of the three loss terms."""

    box: float = 0.05
    obj: float = 0.5
    cls: float = 0.1


@dataclass(frozen=True)
class HeadGeometry:
    """What the loss needs of one head: anchors (px), stride (x, y), scale_x_y, objectness weight, decode."""

    anchors: torch.Tensor  # [A, 2]
    stride: tuple[float, float]
    scale_x_y: float
    balance: float
    decode: str = "darknet"  # 'new_coords': the head conv is logistic, so its outputs are probabilities


def head_geometry(graph: Graph) -> list[HeadGeometry]:
    """Loss geometry of every head; darknet-style (logistic xy, exp wh) and new_coords (YOLOv5's) heads."""
    _, height, width = graph.input_shape
    result = []
    for head in graph.heads:
        if head.decode not in ("darknet", "new_coords"):
            raise PruneyoloError(f"{graph.path}: training supports [yolo] heads with darknet decoding, not "
                                 f"{head.decode!r} (layer {head.index})")
        stride = (width / head.out_shape[2], height / head.out_shape[1])
        result.append(HeadGeometry(torch.tensor(head.head_anchors, dtype=torch.float32), stride,
                                   head.scale_x_y, BALANCE.get(head.stride, 0.4), head.decode))
    return result


def ciou(first: torch.Tensor, second: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired (cx, cy, w, h) boxes [K, 4]."""
    first_min, first_max = first[:, :2] - first[:, 2:] / 2, first[:, :2] + first[:, 2:] / 2
    second_min, second_max = second[:, :2] - second[:, 2:] / 2, second[:, :2] + second[:, 2:] / 2
    inter = (torch.min(first_max, second_max) - torch.max(first_min, second_min)).clamp(min=0).prod(1)
    union = first[:, 2:].prod(1) + second[:, 2:].prod(1) - inter + eps
    iou = inter / union
    diagonal = (torch.max(first_max, second_max) - torch.min(first_min, second_min)).pow(2).sum(1) + eps
    centres = (first[:, :2] - second[:, :2]).pow(2).sum(1)
    aspect = (4 / math.pi ** 2) * (torch.atan(second[:, 2] / (second[:, 3] + eps))
                                   - torch.atan(first[:, 2] / (first[:, 3] + eps))).pow(2)
    with torch.no_grad():
        alpha = aspect / (aspect - iou + 1 + eps)
    return iou - centres / diagonal - alpha * aspect


def assign(targets: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target index, anchor index) pairs: the best anchor of each target by w/h IoU, and all above ASSIGN_IOU."""
    sizes = targets[:, 4:6]
    inter = torch.min(sizes[:, None], anchors[None]).prod(2)
    iou = inter / (sizes.prod(1)[:, None] + anchors.prod(1)[None] - inter)
    chosen = iou > ASSIGN_IOU
    chosen[torch.arange(len(targets)), iou.argmax(1)] = True
    return chosen.nonzero(as_tuple=True)


def yolo_loss(outputs: list[torch.Tensor], targets: torch.Tensor, geometry: list[HeadGeometry],
              weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of raw head outputs against targets [M, 6], and its parts for logging."""
    anchors = torch.cat([head.anchors for head in geometry])
    head_of = torch.cat([torch.full((len(head.anchors),), i) for i, head in enumerate(geometry)])
    first_anchor = torch.cumsum(torch.tensor([0] + [len(head.anchors) for head in geometry]), 0)
    target_index, anchor_index = assign(targets, anchors) if len(targets) else (torch.zeros(0, dtype=torch.long),) * 2
    box_loss = cls_loss = obj_loss = outputs[0].new_zeros(())
    for index, (raw, head) in enumerate(zip(outputs, geometry, strict=True)):
        count, (n, _, height, width) = len(head.anchors), raw.shape
        p = raw.view(n, count, -1, height, width).permute(0, 1, 3, 4, 2)
        probabilities = head.decode == "new_coords"
        bce = F.binary_cross_entropy if probabilities else F.binary_cross_entropy_with_logits
        obj_target = torch.zeros_like(p[..., 4])
        here = head_of[anchor_index] == index
        if here.any():
            rows, slot = targets[target_index[here]], anchor_index[here] - first_anchor[index]
            image = rows[:, 0].long()
            column = (rows[:, 2] / head.stride[0]).long().clamp(0, width - 1)
            row = (rows[:, 3] / head.stride[1]).long().clamp(0, height - 1)
            picked = p[image, slot, row, column]
            s = head.scale_x_y
            cell = torch.stack([column, row], 1).to(picked.dtype)
            if probabilities:
                xy = (picked[:, :2] * s - 0.5 * (s - 1) + cell) * torch.tensor(head.stride)
                wh = (2 * picked[:, 2:4]) ** 2 * head.anchors[slot]
            else:
                xy = (torch.sigmoid(picked[:, :2]) * s - 0.5 * (s - 1) + cell) * torch.tensor(head.stride)
                wh = torch.exp(picked[:, 2:4].clamp(max=MAX_LOG_WH)) * head.anchors[slot]
            overlap = ciou(torch.cat([xy, wh], 1), rows[:, 2:6])
            box_loss = box_loss + (1 - overlap).mean()
            obj_target[image, slot, row, column] = 1.0
            classes = F.one_hot(rows[:, 1].long(), picked.shape[1] - 5).to(picked.dtype)
            cls_loss = cls_loss + bce(picked[:, 5:], classes)
        obj_loss = obj_loss + head.balance * bce(p[..., 4], obj_target)
    total = weights.box * box_loss + weights.obj * obj_loss + weights.cls * cls_loss
    return total, {name: float(part.detach()) for name, part in (("box", box_loss), ("obj", obj_loss), ("cls", cls_loss))}


# ---- anchor-free heads ([detect]: YOLOv8 / YOLO11) ------------------------------------------------------

@dataclass(frozen=True)
class AlignedGains:
    """Gains of the anchor-free loss terms and the task-aligned assigner's settings (Ultralytics' defaults)."""

    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    top_k: int = 10  # candidate anchor points per target
    alpha: float = 0.5  # alignment metric = score ** alpha * IoU ** beta
    beta: float = 6.0


@dataclass(frozen=True)
class AnchorFree:
    """What the anchor-free loss needs of the graph: each head's stride and the bins per box side."""

    strides: tuple[int, ...]
    reg_max: int


def anchor_free_heads(graph: Graph) -> AnchorFree:
    """The loss geometry of a graph whose heads are all [detect] (one reg_max and class count)."""
    kinds = {(head.reg_max, head.classes) for head in graph.heads}
    if len(kinds) != 1:
        raise PruneyoloError(f"{graph.path}: training needs one reg_max and one class count over all [detect] "
                             f"heads, not {sorted(kinds)}")
    (reg_max, _), = kinds
    return AnchorFree(tuple(head.stride for head in graph.heads), reg_max)


def anchor_points(shapes: list[tuple[int, int]], strides: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of every head's (h, w) grid, row by row, heads in order -> (points [N, 2] px, strides [N, 1])."""
    points, point_strides = [], []
    for (height, width), stride in zip(shapes, strides, strict=True):
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        points.append(torch.stack([xs, ys], -1).reshape(-1, 2) * stride)
        point_strides.append(torch.full((height * width, 1), float(stride)))
    return torch.cat(points), torch.cat(point_strides)


def split_outputs(outputs: list[torch.Tensor], reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw heads [B, 4 x reg_max + C, h, w] -> (distance bins [B, N, 4, reg_max], class logits [B, N, C])."""
    rows = torch.cat([raw.flatten(2).transpose(1, 2) for raw in outputs], 1)
    return rows[..., :4 * reg_max].unflatten(-1, (4, reg_max)), rows[..., 4 * reg_max:]


def distances_to_boxes(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Points [..., 2] and (left, top, right, bottom) distances [..., 4] -> xyxy boxes [..., 4]."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], -1)


def boxes_to_distances(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Points [..., 2] and xyxy boxes [..., 4] -> (left, top, right, bottom) distances [..., 4]."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], -1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)


def padded_targets(targets: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [M, 6] -> per image (classes [B, K] long, xyxy boxes [B, K, 4], present [B, K]), K the most per image."""
    targets = targets[torch.argsort(targets[:, 0], stable=True)]
    image = targets[:, 0].long()
    counts = torch.bincount(image, minlength=batch)
    most = int(counts.max()) if len(targets) else 0
    slot = torch.arange(len(targets)) - (torch.cumsum(counts, 0) - counts)[image]
    classes = torch.zeros(batch, most, dtype=torch.long)
    boxes = torch.zeros(batch, most, 4)
    present = torch.zeros(batch, most, dtype=torch.bool)
    centres, sizes = targets[:, 2:4], targets[:, 4:6]
    classes[image, slot] = targets[:, 1].long()
    boxes[image, slot] = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
    present[image, slot] = True
    return classes, boxes, present


def points_inside(points: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Whether each point [N, 2] lies strictly inside each box [B, K, 4] -> [B, K, N]."""
    return boxes_to_distances(points, boxes[..., None, :]).amin(-1) > eps


def task_aligned_assign(scores: torch.Tensor, pred_boxes: torch.Tensor, points: torch.Tensor,
                        gt_classes: torch.Tensor, gt_boxes: torch.Tensor, present: torch.Tensor,
                        gains: AlignedGains = AlignedGains()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets of every anchor point: (xyxy boxes [B, N, 4], class scores [B, N, C], foreground [B, N]).

    Inputs: predicted class probabilities [B, N, C] and xyxy boxes [B, N, 4], points [N, 2], per-image targets
    from padded_targets (all in pixels). A target's candidates are the top_k points by alignment among those
    inside it; a point several targets pick goes to the one it overlaps most; its class score is its alignment,
    rescaled so each target's best point gets that point's IoU.
    """
    batch, count, classes = scores.shape
    if not present.any():
        return pred_boxes.new_zeros(batch, count, 4), torch.zeros_like(scores), torch.zeros(batch, count, dtype=torch.bool)
    inside = points_inside(points, gt_boxes) & present[..., None]
    image, target, point = inside.nonzero(as_tuple=True)
    overlaps = scores.new_zeros(inside.shape)
    overlaps[image, target, point] = ciou(xyxy_to_cxcywh(gt_boxes[image, target]),
                                          xyxy_to_cxcywh(pred_boxes[image, point])).clamp(min=0)
    alignment = scores.new_zeros(inside.shape)
    alignment[image, target, point] = (scores[image, point, gt_classes[image, target]].pow(gains.alpha)
                                       * overlaps[image, target, point].pow(gains.beta))
    top = alignment.topk(min(gains.top_k, count), -1).indices
    chosen = torch.zeros_like(inside).scatter_(-1, top, True) & inside
    contested = chosen.sum(1, keepdim=True) > 1
    if contested.any():
        closest = F.one_hot(overlaps.argmax(1), gt_boxes.shape[1]).transpose(1, 2).bool()
        chosen = torch.where(contested, closest, chosen)
    foreground = chosen.any(1)
    owner = chosen.to(torch.uint8).argmax(1)
    boxes = gt_boxes.gather(1, owner[..., None].expand(-1, -1, 4))
    alignment = alignment * chosen
    best_alignment = alignment.amax(-1, keepdim=True)
    best_overlap = (overlaps * chosen).amax(-1, keepdim=True)
    strength = (alignment * best_overlap / (best_alignment + 1e-9)).amax(1)
    target_scores = F.one_hot(gt_classes.gather(1, owner), classes).to(scores.dtype) * (strength * foreground)[..., None]
    return boxes, target_scores, foreground


def dfl_loss(bins: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Distribution Focal Loss of bins [K, 4, reg_max] for target distances [K, 4] in [0, reg_max - 1) -> [K].

    Each side: cross-entropy to the two bins around the distance, weighted by nearness; the 4 sides averaged.
    """
    below = distances.floor().long()
    above_weight = distances - below
    log_probabilities = bins.log_softmax(-1)
    lower = log_probabilities.gather(-1, below[..., None])[..., 0]
    upper = log_probabilities.gather(-1, below[..., None] + 1)[..., 0]
    return -(lower * (1 - above_weight) + upper * above_weight).mean(-1)


def anchor_free_loss(outputs: list[torch.Tensor], targets: torch.Tensor, heads: AnchorFree,
                     gains: AlignedGains = AlignedGains()) -> tuple[torch.Tensor, dict[str, float]]:
    """The YOLOv8 training loss of raw [detect] outputs against targets [M, 6], and its parts for logging.

    All three terms are summed over anchor points weighted by the assigned class scores, then divided by the
    sum of those scores.
    """
    bins, logits = split_outputs(outputs, heads.reg_max)
    bins, logits = bins.float(), logits.float()
    points, strides = anchor_points([raw.shape[2:] for raw in outputs], heads.strides)
    cells = points / strides
    pred_boxes = distances_to_boxes(cells, dfl_distances(bins))  # in grid cells of each point's head
    gt_classes, gt_boxes, present = padded_targets(targets, len(logits))
    boxes, target_scores, foreground = task_aligned_assign(logits.detach().sigmoid(), pred_boxes.detach() * strides,
                                                           points, gt_classes, gt_boxes, present, gains)
    total_score = target_scores.sum().clamp(min=1)
    cls_loss = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum") / total_score
    box_loss = dfl_part = logits.new_zeros(())
    if foreground.any():
        weight = target_scores.sum(-1)[foreground]
        point_strides = strides.expand(len(logits), -1, -1)[foreground]
        target_cells = boxes[foreground] / point_strides
        overlap = ciou(xyxy_to_cxcywh(pred_boxes[foreground]), xyxy_to_cxcywh(target_cells))
        box_loss = ((1 - overlap) * weight).sum() / total_score
        distances = boxes_to_distances(cells.expand(len(logits), -1, -1)[foreground], target_cells)
        dfl_part = (dfl_loss(bins[foreground], distances.clamp(0, heads.reg_max - 1.01)) * weight).sum() / total_score
    total = gains.box * box_loss + gains.cls * cls_loss + gains.dfl * dfl_part
    return total, {name: float(part.detach()) for name, part in (("box", box_loss), ("cls", cls_loss),
                                                                 ("dfl", dfl_part))}


# ---- choosing the loss ----------------------------------------------------------------------------------

def criterion(graph: Graph) -> Loss:
    """The loss of a graph's head type: anchor-free for [detect] heads, anchor-based for [yolo] ones."""
    anchor_free = {head.decode == "dfl" for head in graph.heads}
    if anchor_free == {True}:
        return partial(anchor_free_loss, heads=anchor_free_heads(graph))
    if anchor_free == {False}:
        return partial(yolo_loss, geometry=head_geometry(graph))
    raise PruneyoloError(f"{graph.path}: training needs all heads anchor-free ([detect]) or all anchor-based "
                         f"([yolo]), not a mix")
