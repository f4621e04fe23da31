"""The `train` and `eval` commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pruneyolo.cli.options import load_for_training, load_model, size_option
from pruneyolo.errors import PruneyoloError


def metrics_table(title: str, metrics):
    """A rich Table of one row: P, R, mAP@0.5, mAP@0.5:0.95 and the image count."""
    from rich.table import Table

    table = Table(title=title)
    for header in ("images", "P", "R", "mAP50", "mAP50-95", "seconds"):
        table.add_column(header, justify="right")
    table.add_row(str(metrics.images), f"{metrics.precision:.3f}", f"{metrics.recall:.3f}", f"{metrics.map50:.3f}",
                  f"{metrics.map50_95:.3f}", f"{metrics.seconds:.1f}")
    return table


def set_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads (1 is the steadiest on a busy 2-core machine)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


threads_option = click.option("--threads", type=click.IntRange(1), help="PyTorch threads (default: all cores).")


@click.command("train")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset directory from `pruneyolo synth` (data.json, images/, labels/).")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False),
              help="Start from these Darknet .weights (e.g. a pruned model to fine-tune); default: random init.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for <stem>.weights, <stem>.pt, train_log.jsonl and gammas/epoch_NNN.png.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--batch", default=16, show_default=True, type=click.IntRange(2))
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--warmup", default=200, show_default=True, type=click.IntRange(1), help="Warm-up steps.")
@click.option("--sparsity", default=0.0, show_default=True, type=click.FloatRange(0),
              help="L1 on the prunable BatchNorm gammas, decaying as SR * (1 - 0.9 * epoch / epochs).")
@click.option("--sparsity-step", type=click.Choice(["proximal", "subgradient"]), default="proximal",
              show_default=True, help="proximal: after each optimiser step |gamma| -= lr * SR, stopping at 0 "
              "(exact zeros); subgradient: SR * sign(gamma) added to the gradient.")
@click.option("--sparsity-decay", default=0.9, show_default=True, type=click.FloatRange(0, 1),
              help="The L1 rate falls linearly over the run to (1 - this) of SR; 0 keeps it constant.")
@click.option("--gamma-lr", default=0.0, show_default=True, type=click.FloatRange(0),
              help="With --sparsity: train the penalised gammas by SGD at this learning rate (same schedule) "
              "instead of --optimizer; 0 keeps them with the others.")
@click.option("--ema/--no-ema", default=True, show_default=True, help="Save an exponential moving average.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random zoom, shift, flips and HSV jitter.")
@click.option("--limit", type=click.IntRange(2), help="Train on the first N images only.")
@click.option("--val", "val_split", help="Score the model on this split (e.g. val) after every epoch.")
@click.option("--until-plateau", "plateau", type=click.FloatRange(0, min_open=True),
              help="With --val: stop once val mAP50 rose less than this over the last 2 epochs (e.g. 0.01).")
@click.option("--seed", default=0, show_default=True, type=int)
@threads_option
@size_option
def train_command(cfg, data_dir, weights_path, out_dir, epochs, batch, lr, optimizer, warmup, sparsity,
                  sparsity_step, sparsity_decay, gamma_lr, ema, augment, limit, val_split, plateau, seed, threads,
                  size):
    """Train CFG (or a YOLOv5 / YOLOv8 / YOLO11 .pt, imported into -o first) on a dataset's train split and write
    Darknet .weights plus a checkpoint; the loss follows the head type ([yolo] anchors or [detect] DFL)."""
    from pruneyolo.train.trainer import NO_AUGMENT, Augment, TrainOptions, train

    if plateau and not val_split:
        raise PruneyoloError("--until-plateau needs --val SPLIT to score the epochs on")
    set_threads(threads)
    graph, weights, _ = load_for_training(cfg, weights_path, size, out_dir)
    options = TrainOptions(epochs=epochs, batch=batch, lr=lr, optimizer=optimizer, warmup=warmup,
                           sparsity=sparsity, sparsity_step=sparsity_step, sparsity_decay=sparsity_decay,
                           gamma_lr=gamma_lr, ema=ema, augment=Augment() if augment else NO_AUGMENT, seed=seed,
                           limit=limit, val_split=val_split, plateau=plateau)
    result = train(graph, weights, data_dir, out_dir, options, log=click.echo)
    click.echo(f"wrote {result.weights_path}")


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False), help="Darknet .weights (for a cfg).")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset directory from `pruneyolo synth`.")
@click.option("--split", default="test", show_default=True)
@click.option("--conf", default=0.001, show_default=True, type=click.FloatRange(0, 1),
              help="Score threshold for mAP.")
@click.option("--iou", default=0.6, show_default=True, type=click.FloatRange(0, 1), help="NMS IoU threshold.")
@click.option("--pr-conf", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Score threshold for P and R (matched at IoU 0.5).")
@click.option("--limit", type=click.IntRange(1), help="Score the first N images only.")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device (for an IR).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metrics as JSON.")
@threads_option
@size_option
def eval_command(model, weights_path, data_dir, split, conf, iou, pr_conf, limit, device, json_path, threads,
                 size):
    """Score MODEL (a cfg with --weights, a YOLOv5 .pt, or an IR .xml) on a split: P, R, mAP@0.5, mAP@0.5:0.95."""
    from rich.console import Console

    from pruneyolo.accuracy import evaluate, ir_predictor, torch_predictor
    from pruneyolo.files import atomic_write
    from pruneyolo.modelfile import GRAPH_KINDS, require_kind

    set_threads(threads)
    if require_kind(model, "ir", *GRAPH_KINDS) == "ir":
        predict = ir_predictor(model, device)
    else:
        graph, weights, _ = load_model(model, weights_path, size)
        predict = torch_predictor(graph, weights)
    metrics = evaluate(predict, data_dir, split, conf, iou, pr_conf, limit)
    Console().print(metrics_table(f"{Path(model).name} on {split}", metrics))
    if json_path:
        atomic_write(json_path, json.dumps(metrics.as_dict(), indent=1) + "\n")
