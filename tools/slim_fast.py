"""Device-aware slimming on the demo model: global-threshold prunes against latency allocations at equal latency.

Reuses tools/slim_demo's run folder (dataset, sparsity-trained weights, fine-tuned prunes) or, on a fresh clone,
the shipped sparsity-trained cfgs/demo-csp_sparse.weights and a dataset made again with slim_demo's settings.
For each global percent: prune as slim_demo does, measure the prune's latency at 832x832 on this CPU at its
default precision, allocate on the profiled table (`prune --allocate latency`) until an allocation measures within
3% of it (the two taking turns call by call), fine-tune both the same epochs from the same sparsity model, score
both, and time both (FP32 IR at the default precision, INT8 IR) with the baseline, taking turns call by call.
Writes the Pareto chart, a section of docs/results.md and cfgs/prune_fast.cfg + .weights: the best allocation when
it meets the speed-up and mAP50 targets without losing to its global prune, else the fastest that wins its pair.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import click
import openvino as ov
import torch
from slim_demo import (
    BASE_CFG,
    Stages,
    cached_metrics,
    convert,
    machine_name,
    prune_to,
    pruneyolo,
    say,
)

from pruneyolo.accuracy import Metrics, evaluate, torch_predictor
from pruneyolo.bench import LIKE_TOLERANCE
from pruneyolo.bench.allocation import allocate_to_budget
from pruneyolo.bench.budget import Budget, Measurement
from pruneyolo.bench.latency import (
    LatencyTable,
    Reference,
    Target,
    calibrate,
    interleaved_ms,
    network_model,
    predict_ms,
    profile,
    turns_ms,
    uniform_graph,
)
from pruneyolo.darknet.graph import Graph, build_graph, load_graph
from pruneyolo.darknet.weights import read_weights
from pruneyolo.files import write_png
from pruneyolo.prune.allocate import apply_allocation, threshold_importance
from pruneyolo.prune.pruning import channel_masks, write_result
from pruneyolo.runner.adapter import compile_config, ran_at

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SPARSE = ROOT / "cfgs" / "demo-csp_sparse.weights"
SIZE = (832, 832)  # the 2x2 mosaic tools/demo runs
RETARGETS = 4  # allocations tried per budget: each retargets the prediction by the measured ratio
EQUAL = LIKE_TOLERANCE  # "equal latency": measured within 3%
SPEEDUP_TARGET = 2.5  # the best allocation against the baseline, at the default precision
FIT_KEEPS = (1.0, 0.5, 0.25, 0.12)  # uniform widths the table is fitted to (the prunes here keep about 0.1)


@dataclass
class Model:
    """One model of the comparison: its files, score and timings (ms per inference, by IR storage)."""

    name: str
    method: str  # "baseline", "global" or "allocation"
    cfg: Path
    weights: Path
    percent: float | None = None
    importance: float | None = None
    metrics: Metrics | None = None
    ms: dict[str, float] = field(default_factory=dict)
    ran: dict[str, str] = field(default_factory=dict)
    predicted_ms: float | None = None
    base_ms: dict[str, float] = field(default_factory=dict)  # the baseline's ms in the same timing session
    params: int = 0


def dataset(out: Path) -> Path:
    """slim_demo's dataset folder, made with its settings when missing."""
    data = out / "data"
    if not (data / "data.json").is_file():
        pruneyolo("synth", data, "--train", 2400, "--val", 200, "--test", 300, "--size", 320)
    return data


def sparse_weights(out: Path) -> Path:
    """slim_demo's sparsity-trained weights, else the shipped copy."""
    found = out / "sparse" / f"{BASE_CFG.stem}.weights"
    return found if found.is_file() else SHIPPED_SPARSE


def fine_tune(cfg: Path, weights: Path, folder: Path, data: Path, epochs: int) -> Path:
    """slim_demo's fine-tuning stage for a prune (skipped when its weights exist)."""
    tuned = folder / f"{cfg.stem}.weights"
    if not tuned.is_file():
        pruneyolo("train", cfg, "-o", folder, "--epochs", epochs, "--weights", weights, "--lr", 1e-3, "--warmup", 50,
                  "--data", data, "--batch", 16, "--threads", 2, "--val", "val")
    return tuned


def tune_folder(out: Path, stem: str, epochs: int) -> Path:
    """Where a prune's fine-tune lives: slim_demo's own fine-tuned prune when it trained the same epochs, else
    fast_tune_e{epochs}_{stem}."""
    reused = out / "finetune"
    log = reused / "train_log.jsonl"
    if ((reused / f"{stem}.weights").is_file() and log.is_file()
            and json.loads(log.read_text().splitlines()[-1]).get("epoch") == epochs):
        return reused
    return out / f"fast_tune_e{epochs}_{stem}"


def score(model: Model, data: Path, path: Path) -> None:
    graph = load_graph(model.cfg)
    model.metrics = cached_metrics(path, lambda: evaluate(torch_predictor(graph, read_weights(model.weights, graph)),
                                                          data))
    model.params = graph.params
    say(f"{model.name}: mAP50 {model.metrics.map50:.3f}")


def allocate_to(graph, weights, table, reference: Reference, layer_keep: float, round_to: int, folder: Path,
                seconds: float):
    """`prune --target-like`'s search at the global prune's (the reference's) latency: allocated to its predicted
    ms, each allocation timed in turns with it and retargeted until one lands within EQUAL (at most RETARGETS).
    Returns the allocation, its files, and its and the reference's measured ms."""
    def measure(result):
        return Measurement(reference.beside(network_model(result.graph, result.weights), "CPU", None, seconds),
                           reference.ran)

    found = allocate_to_budget(load_graph_at(graph, SIZE), weights, table,
                               Budget(ms=reference.ms, like=reference.name, tolerance=EQUAL), measure, layer_keep,
                               round_to, RETARGETS, say, predict_ms(table, reference.graph))
    for trial in found.trials:
        say(f"allocation predicted {trial.allocation.predicted_ms:.2f} ms: measured {trial.measured_ms:.2f} ms "
            f"beside the global prune's {reference.ms:.2f} ms ({100 * (trial.measured_ms / reference.ms - 1):+.1f}%)")
    if found.chosen is None:
        raise SystemExit("no allocation reaches the global prune's latency")
    folder.mkdir(parents=True, exist_ok=True)
    result = apply_allocation(graph, weights, found.chosen.allocation)  # at the training size
    cfg, weights_path = write_result(result, folder, str(BASE_CFG), stem=f"{folder.name}_{BASE_CFG.stem}")
    return found.chosen.allocation, cfg, weights_path, found.chosen.measured_ms, reference.ms


def load_graph_at(graph, size):
    """A graph rebuilt at another input size (its sections as they are)."""
    return build_graph(list(graph.sections), graph.path, size, graph.dialect)


def irs(model: Model, folder: Path, calib: Path) -> dict[str, Path]:
    """The model's FP32 and INT8 IRs at SIZE (slim_demo's conversion and calibration)."""
    return {storage: convert(model.cfg, model.weights, folder / storage, storage, calib, SIZE)
            for storage in ("fp32", "int8")}


def time_side_by_side(base: Model, pairs: list[tuple[Model, Model]], xmls: dict[str, dict[str, Path]],
                      seconds: float) -> None:
    """Each pair's latency per storage (median of sync requests, LATENCY hint, default precision): the baseline,
    the global prune and its allocation taking turns call by call (turns_ms), so that the pair and its
    speed-up are measured in the same weather; the baseline's figure is the median over the pairs' sessions."""
    core, everyone = ov.Core(), [base, *[model for pair in pairs for model in pair]]
    for storage in ("fp32", "int8"):
        compiled = {m.name: core.compile_model(str(xmls[m.name][storage]), "CPU", compile_config("LATENCY", None))
                    for m in everyone}
        base_ms = []
        for pair in pairs:
            measured = turns_ms({name: compiled[name] for name in (base.name, *(m.name for m in pair))},
                                3 * seconds)
            base_ms.append(measured[base.name])
            for model in pair:
                model.ms[storage], model.base_ms[storage] = measured[model.name], measured[base.name]
        base.ms[storage] = base.base_ms[storage] = statistics.median(base_ms)
        for model in everyone:
            model.ran[storage] = ran_at(compiled[model.name])
        say(f"{storage} IRs at {SIZE[0]}x{SIZE[1]}: " + "; ".join(
            f"{g.name} {g.ms[storage]:.2f} ms, {a.name} {a.ms[storage]:.2f} ms, baseline {a.base_ms[storage]:.2f} ms"
            for g, a in pairs))


def check_predictions(models: list[Model], table: LatencyTable, deployed: Graph, seconds: float) -> dict:
    """The worst error of the table's predictions against the prunes' FP32 networks (random weights, as the table
    was fitted), timed together with the fit's uniform networks: as the table stands ("worst") and with its
    whole-network fit re-timed in the same session ("refit_worst", with the re-timed "scale" and "other_ms")."""
    uniform = {f"uniform {keep:g}": uniform_graph(deployed, table, keep) for keep in FIT_KEEPS}
    graphs = {m.name: load_graph(m.cfg, SIZE) for m in models}
    networks = {name: network_model(graph, None) for name, graph in (graphs | uniform).items()}
    measured = interleaved_ms(ov.Core(), networks, "CPU", None, seconds * len(networks))
    raw = table.uncalibrated()
    refit = table.calibrated(tuple((predict_ms(raw, graph), measured[name]) for name, graph in uniform.items()))
    say(f"whole-network fit re-timed now: scale {refit.scale:.3f}, other {refit.other_ms:.2f} ms (the table's: "
        f"{table.scale:.3f}, {table.other_ms:.2f} ms)")
    errors, refit_errors = [], []
    for model in models:
        refit_ms = predict_ms(refit, graphs[model.name])
        errors.append(model.predicted_ms / measured[model.name] - 1)
        refit_errors.append(refit_ms / measured[model.name] - 1)
        say(f"{model.name}: predicted {model.predicted_ms:.2f} ms ({refit_ms:.2f} with the fit "
            f"re-timed), measured {measured[model.name]:.2f} ms ({100 * errors[-1]:+.1f}%, "
            f"{100 * refit_errors[-1]:+.1f}%)")
    return {"worst": max(map(abs, errors)), "refit_worst": max(map(abs, refit_errors)), "scale": refit.scale,
            "other_ms": refit.other_ms}


def plot_pareto(models: list[Model], path: Path, machine: str, flags: str, epochs: int) -> None:
    """mAP50 against measured ms, one panel per IR storage, one line per method; the CPU and its flags above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 2, figsize=(10, 4.2))
    for axes, storage in zip(panels, ("fp32", "int8"), strict=True):
        for method, color in (("global", "tab:orange"), ("allocation", "tab:blue"), ("baseline", "black")):
            points = sorted((m.ms[storage], m.metrics.map50) for m in models if m.method == method)
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", color=color,
                          label={"global": "global threshold", "allocation": "latency allocation"}.get(method, method))
        ran = next(m.ran[storage] for m in models)
        axes.set_title(f"{storage.upper()} IR at {SIZE[0]}x{SIZE[1]}, ran at {ran}", fontsize=9)
        axes.set_xlabel("ms per inference (LATENCY hint, median)")
        axes.set_ylabel("mAP50 (test split)")
        axes.set_xscale("log")
        axes.legend(fontsize=7)
    figure.suptitle(f"prunes fine-tuned {epochs} epochs; {machine} ({flags})", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, figure, dpi=100)


def scores_by_epochs(pairs: list[tuple[Model, Model]], scores: Path) -> str:
    """mAP50 of each pair after every fine-tune length scored so far (fast_scores/{stem}_e{N}.json), as a table."""
    found = {}
    for model in (m for pair in pairs for m in pair):
        for path in scores.glob(f"{model.cfg.stem}_e*.json"):
            epochs = path.stem.rpartition("_e")[2]
            if epochs.isdigit():
                found.setdefault(int(epochs), {})[model.name] = json.loads(path.read_text())["mAP50"]
    lengths = sorted(found)

    def cell(glob: Model, alloc: Model, epochs: int) -> str:
        got = found[epochs]
        if glob.name not in got or alloc.name not in got:
            return "-"
        return f"{got[glob.name]:.3f} / {got[alloc.name]:.3f} ({100 * (got[alloc.name] - got[glob.name]):+.1f})"

    head = " | ".join(f"{epochs} epochs" for epochs in lengths)
    rows = "\n".join(f"| {g.percent:g} | " + " | ".join(cell(g, a, e) for e in lengths) + " |" for g, a in pairs)
    return f"| global percent | {head} |\n|---|{'---|' * len(lengths)}\n{rows}"


def report(models: list[Model], pairs: list[tuple[Model, Model]], machine: str, flags: str, settings: dict,
           minutes: dict, table: LatencyTable, checked: dict, goals: list[str], epochs_table: str, note: str) -> str:
    base = next(m for m in models if m.method == "baseline")
    rows = "\n".join(
        f"| {m.name} | {m.metrics.map50:.3f} | {m.params:,} | "
        f"{'-' if m.importance is None else f'{100 * m.importance:.1f}%'} | "
        f"{'-' if m.predicted_ms is None else f'{m.predicted_ms:.2f}'} | {m.ms['fp32']:.2f} | "
        f"{m.base_ms['fp32'] / m.ms['fp32']:.2f}x | {m.ms['int8']:.2f} | {m.base_ms['int8'] / m.ms['int8']:.2f}x |"
        for m in models)
    pair_lines = "\n".join(
        f"| {g.percent:g} | {g.ms['fp32']:.2f} / {a.ms['fp32']:.2f} | {g.metrics.map50:.3f} / {a.metrics.map50:.3f} | "
        f"{100 * (a.metrics.map50 - g.metrics.map50):+.1f} | {g.ms['int8']:.2f} / {a.ms['int8']:.2f} |"
        for g, a in pairs)
    stage_lines = "\n".join(f"| {name} | {value:.1f} |" for name, value in minutes.items())
    goal_lines = "\n".join(f"- {goal}" for goal in goals)
    note_text = f"\n{note}\n" if note else ""
    return f"""{section_title(settings['finetune_epochs'])}

Measured by `tools/slim_fast` in one run on {machine} (flags: {flags}), default inference precision
{base.ran['fp32']}. For each global percent the global prune (slim_demo's --layer-keep/--round and residual blocks)
is timed, then `prune --allocate latency` allocates widths and residual blocks on this CPU's profiled latency
table until an allocation measures within 3% of the global prune, the two timed together; both are fine-tuned {settings['finetune_epochs']} epochs from the same sparsity model
and scored on the test split (the model at 256x256). Latency: the IR at {SIZE[0]}x{SIZE[1]}, median of
sync requests at the LATENCY hint, the baseline, a global prune and its allocation taking turns call by call
({3 * settings['seconds']:g} s per session; speed-ups against the baseline of the same session), so that this
shared machine's drifting speed slows them alike; the FP32 IR at the default
precision and the INT8 IR. Settings: {json.dumps(settings)}.

### Targets (device-aware slimming)

{goal_lines}

| model | mAP50 | params | importance kept | predicted ms | ms FP32 IR | speed-up | ms INT8 IR | speed-up |
|---|---|---|---|---|---|---|---|---|
{rows}

Global against allocation, same budget (ms global / allocation; mAP50 global / allocation):

| global percent | ms FP32 IR | mAP50 | allocation - global (points) | ms INT8 IR |
|---|---|---|---|---|
{pair_lines}

mAP50 global / allocation (allocation - global, points) after each fine-tune length scored (the same prunes and
allocations, each length fine-tuned from the sparsity model):

{epochs_table}

The latency table (profiled on this CPU, a network's ms interpolated by its sum of conv ms between uniform
networks at {FIT_KEEPS} of the widths) predicted every prune above within {100 * checked['worst']:.1f}% of its
measured latency (worst case; the networks with random weights, as the table is fitted, timed together after the
table was made). With the uniform networks re-timed beside them (the per-layer profile unchanged; their
least-squares line moved from scale {table.scale:.3f}, other {table.other_ms:.2f} ms to {checked['scale']:.3f},
{checked['other_ms']:.2f} ms) it predicted within {100 * checked['refit_worst']:.1f}%. The allocation search itself times
each candidate it builds; `prune --allocate latency` prints them side by side.

![mAP50 against measured latency]({chart_name(settings['finetune_epochs'])})

| stage | minutes |
|---|---|
{stage_lines}
{note_text}"""


def cpu_flags() -> str:
    """The CPU's vector and matrix flags (AVX2, AVX-512 parts, AMX)."""
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    wanted = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni")
              or f.startswith("amx")]
    return " ".join(wanted) or "none of avx2/avx512/amx"


def section_title(epochs: int) -> str:
    return f"## Device-aware slimming, fine-tuned {epochs} epochs"


def chart_name(epochs: int) -> str:
    return f"img/pareto_e{epochs}.png"


def write_section(text: str, epochs: int) -> None:
    """Replace (or add at the end) this fine-tune length's section of docs/results.md."""
    path = ROOT / "docs" / "results.md"
    current = path.read_text() if path.is_file() else ""
    title = section_title(epochs)
    head, found, rest = current.partition(title + "\n")
    tail = rest[rest.index("\n## "):] if found and "\n## " in rest else ""
    path.write_text(head.rstrip() + "\n\n" + text.rstrip() + "\n" + tail if head.strip() else text + tail)


def goals_of(base: Model, pairs: list[tuple[Model, Model]], shipped_map50: float) -> tuple[list[str], Model | None]:
    """The issue's targets, each met or missed, and the allocation to ship: the best one when it meets the speed-up
    and mAP50 targets without losing to its global prune, else the fastest that wins its pair (None: none)."""
    lines, winner = [], None
    for glob, alloc in pairs:
        ratio = alloc.ms["fp32"] / glob.ms["fp32"]
        gain = alloc.metrics.map50 - glob.metrics.map50
        wins = ratio <= 1 + EQUAL and gain >= 0.02  # equal latency within 3%; faster only makes the win larger
        lines.append(f"allocation vs global {glob.percent:g} at its latency: {alloc.ms['fp32']:.2f} vs "
                     f"{glob.ms['fp32']:.2f} ms ({100 * (ratio - 1):+.1f}%), mAP50 {alloc.metrics.map50:.3f} vs "
                     f"{glob.metrics.map50:.3f} ({100 * gain:+.1f} points; target: +2 at equal latency, no more than 3% "
                     "slower): "
                     f"{'met' if wins else '**missed**'}")
        if wins and (winner is None or alloc.ms["fp32"] < winner.ms["fp32"]):  # prune_fast: the fastest that wins
            winner = alloc
    best_global, best = max(pairs, key=lambda pair: (pair[1].metrics.map50 >= shipped_map50,
                                                     pair[1].base_ms["fp32"] / pair[1].ms["fp32"]))
    speedup = best.base_ms["fp32"] / best.ms["fp32"]
    fast_enough, accurate = speedup >= SPEEDUP_TARGET, best.metrics.map50 >= shipped_map50
    if (fast_enough and accurate and best.metrics.map50 >= best_global.metrics.map50
            and best.ms["fp32"] <= (1 + EQUAL) * best_global.ms["fp32"]):
        winner = best  # meets both deployment targets and is no worse than its global prune: it ships first
    lines.append(f"best allocation ({best.name}): {speedup:.2f}x the baseline's speed at the default precision "
                 f"(target: {SPEEDUP_TARGET:g}x): {'met' if fast_enough else '**missed**'}; mAP50 "
                 f"{best.metrics.map50:.3f} (target: no lower than the shipped model's {shipped_map50:.3f}): "
                 f"{'met' if accurate else '**missed**'}")
    return lines, winner


@click.command()
@click.option("--out", default=str(ROOT / "runs" / "slim"), show_default=True, type=click.Path(path_type=Path),
              help="tools/slim_demo's folder (reused: dataset, sparsity model, fine-tuned prunes).")
@click.option("--percents", default="0.8,0.88", show_default=True, help="Global percents, one budget each.")
@click.option("--shortcuts", default=6, show_default=True, help="Residual blocks the global prunes remove.")
@click.option("--layer-keep", default=0.1, show_default=True)
@click.option("--round", "round_to", default=4, show_default=True)
@click.option("--finetune-epochs", default=5, show_default=True)
@click.option("--seconds", default=2.0, show_default=True, help="Seconds per latency measurement.")
@click.option("--shipped-map50", default=0.609, show_default=True, help="The shipped prune's mAP50 (a target).")
@click.option("--ship/--no-ship", default=True, show_default=True, help="Write docs/ and cfgs/prune_fast.*.")
@click.option("--note", default="", help="A paragraph on the run's conditions, written under its section.")
@click.option("--stop-after", type=click.Choice(["prunes", "tunes"]),
              help="End after the prunes and allocations, or after the fine-tunes, scores and IRs (what needs no quiet "
                   "machine); a later run without it reuses them and times.")
def main(out: Path, percents: str, shortcuts: int, layer_keep: float, round_to: int, finetune_epochs: int,
         seconds: float, shipped_map50: float, ship: bool, note: str, stop_after: str | None):
    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out / f"fast_timing_e{finetune_epochs}.json")
    data = dataset(out)
    sparse = sparse_weights(out)
    say(f"sparsity model: {sparse}")
    graph = load_graph(BASE_CFG)
    arrays = read_weights(sparse, graph)
    deployed = load_graph(BASE_CFG, SIZE)
    tables = {}

    def table_for_cpu():
        core = ov.Core()
        raw = profile(deployed, "CPU", None, "fp32", fit=False)
        tables["fp32"] = calibrate(raw, deployed, core, Target.on(core, "CPU", None, "fp32"), keeps=FIT_KEEPS)

    stages.run("profile (latency table at 832x832, default precision)", table_for_cpu)
    table = tables["fp32"]
    say(f"table fitted: scale {table.scale:.3f}, other {table.other_ms:.2f} ms, from {len(table.fit)} networks")
    models = [Model("baseline", "baseline", BASE_CFG, out / "baseline_more" / f"{BASE_CFG.stem}.weights")]
    pairs = []

    def prunes():
        for percent in (float(p) for p in percents.split(",")):
            cfg, weights, _ = prune_to(graph, arrays, out / "prune", percent, layer_keep, shortcuts, round_to)
            pruned = load_graph(cfg)
            masks, _, _ = channel_masks(graph, arrays, percent, layer_keep, round_to)
            deployed_prune = load_graph(cfg, SIZE)
            glob = Model(f"global {percent:g} + {shortcuts} blocks", "global", cfg, weights, percent,
                         threshold_importance(graph, arrays, masks), predicted_ms=predict_ms(table, deployed_prune))
            say(f"global {percent:g}: {glob.predicted_ms:.2f} ms predicted, {pruned.params:,} params")
            folder = out / f"alloc_{percent:g}"
            found = folder / "allocation.json"  # a rerun keeps the allocation its fine-tuned weights belong to
            if not found.is_file():
                reference = Reference.timed(glob.name, deployed_prune,
                                            network_model(deployed_prune, read_weights(weights, pruned)), "CPU", None,
                                            seconds)
                allocation, acfg, aweights, measured, reference_ms = allocate_to(
                    graph, arrays, table, reference, layer_keep, round_to, folder, seconds)
                found.write_text(json.dumps({"cfg": str(acfg), "weights": str(aweights), "measured": measured,
                                             "global_measured": reference_ms,
                                             "predicted": allocation.predicted_ms,
                                             "importance": allocation.importance}))
            kept = json.loads(found.read_text())
            alloc = Model(f"allocation at global {percent:g}'s ms", "allocation", Path(kept["cfg"]),
                          Path(kept["weights"]), percent, kept["importance"],
                          predicted_ms=predict_ms(table, load_graph(Path(kept["cfg"]), SIZE)))
            pairs.append((glob, alloc))

    stages.run("prunes and allocations", prunes)
    if stop_after == "prunes":
        return
    for glob, alloc in pairs:
        for model in (glob, alloc):
            folder = tune_folder(out, model.cfg.stem, finetune_epochs)
            stages.train(f"fine-tune {model.name}", folder,
                         lambda m=model, f=folder: fine_tune(m.cfg, m.weights, f, data, finetune_epochs))
            model.weights = folder / f"{model.cfg.stem}.weights"
        models += [glob, alloc]
    def cached_as(model: Model) -> str:
        """The name of a model's cached score and IRs: fine-tuned prunes carry their epoch count."""
        return model.cfg.stem + ("" if model.method == "baseline" else f"_e{finetune_epochs}")

    for model in models:
        score(model, data, out / "fast_scores" / f"{cached_as(model)}.json")
    xmls = {}
    stages.run("IRs", lambda: xmls.update({m.name: irs(m, out / "fast_ir" / cached_as(m), data / "images" / "train")
                                           for m in models}))
    if stop_after == "tunes":
        return
    stages.run("latency side by side", lambda: time_side_by_side(models[0], pairs, xmls, seconds))
    checked = {}
    stages.run("predicted against measured",
               lambda: checked.update(check_predictions(models[1:], table, deployed, seconds)))
    machine, flags = machine_name(), cpu_flags()
    goals, winner = goals_of(models[0], pairs, shipped_map50)
    for goal in goals:
        say(goal)
    say(f"worst prediction error: {100 * checked['worst']:.1f}% ({100 * checked['refit_worst']:.1f}% with the fit "
        "re-timed)")
    if not ship:
        return
    plot_pareto(models, ROOT / "docs" / chart_name(finetune_epochs), machine, flags, finetune_epochs)
    settings = {"percents": percents, "shortcuts": shortcuts, "layer_keep": layer_keep, "round": round_to, "seconds": seconds,
                "finetune_epochs": finetune_epochs, "sparsity_model": str(sparse.relative_to(sparse.parents[1]))}
    write_section(report(models, pairs, machine, flags, settings, stages.minutes, table, checked, goals,
                         scores_by_epochs(pairs, out / "fast_scores"), note), finetune_epochs)
    if winner is not None:
        header = (f"# cfgs/demo-csp.cfg slimmed for {machine} by `prune --allocate latency` at the latency of the "
                  f"global {winner.percent:g} prune, fine-tuned.\n# Written by tools/slim_fast (docs/results.md).\n")
        (ROOT / "cfgs" / "prune_fast.cfg").write_text(header + winner.cfg.read_text())
        shutil.copyfile(winner.weights, ROOT / "cfgs" / "prune_fast.weights")
        say("shipped cfgs/prune_fast.cfg and .weights")
    if not SHIPPED_SPARSE.is_file() and sparse != SHIPPED_SPARSE:
        shutil.copyfile(sparse, SHIPPED_SPARSE)
    say(f"done: {sum(stages.minutes.values()):.1f} min of stages")


if __name__ == "__main__":
    main()
