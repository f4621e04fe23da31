"""Device-aware slimming: the latency table's prediction, allocation by latency (ties, floors, rounding, steps,
blocks, exactness), `pruneyolo prune --allocate latency` and `pruneyolo profile`, all driven by fake device tables
except the profile's own cache test (a three-conv cfg at 32x32)."""

from __future__ import annotations

import math

import numpy as np
import openvino as ov
import pytest
from cfg_sources import corpus_cfg, shipped_cfg, with_corpus
from click.testing import CliRunner
from prune_support import head_inputs, random_image, relative_error, sparse_model, zero_cut_channels

from pruneyolo.bench import latency
from pruneyolo.bench.allocation import allocate_to_budget
from pruneyolo.bench.budget import Budget, Measurement
from pruneyolo.bench.latency import Curve, LatencyTable, Reference, Shape, jobs, predict_ms, width_grid
from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import write_weights
from pruneyolo.prune import device_round
from pruneyolo.prune.allocate import Planner, allocate, apply_allocation, threshold_importance
from pruneyolo.prune.pruning import channel_constraints, layer_floor, prune, write_result

DEMO_TINY, DEMO_CSP = shipped_cfg("demo-tiny"), shipped_cfg("demo-csp")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def blocked(width: int, block: int) -> int:
    return -(-width // block) * block


def fake_ms(shape: Shape, in_width: int, out_width: int, in_block: int, out_block: int) -> float:
    """A device whose convs cost k*k*H*W x input width rounded up to `in_block` x output rounded up to `out_block`."""
    return shape.size ** 2 * shape.height * shape.width * blocked(in_width, in_block) * blocked(out_width, out_block) \
        * 1e-9


def fake_table(graph, in_block: int = 8, out_block: int = 16, other_ms: float = 0.01, scale: float = 1.25,
               heavy: frozenset = frozenset(), device: str = "FAKE") -> LatencyTable:
    """A LatencyTable of fake_ms on the profile's own grid; convs shaped as one in `heavy` also cost a fixed 0.05 ms
    that no narrowing sheds (only removing them does)."""
    heavy_shapes = {Shape.of(graph.nodes[conv]) for conv in heavy}
    curves = {}
    for conv, job in jobs(graph, 16).items():
        fixed = 0.05 if job.shape in heavy_shapes else 0.0

        def ms(i, o, job=job, fixed=fixed):
            return fixed + fake_ms(job.shape, i, o, in_block, out_block)

        curves[conv] = Curve(job.shape, job.in_full, job.out_full, ms(job.in_full, job.out_full),
                             {w: ms(job.in_full, w) for w in job.out_widths},
                             {w: ms(w, job.out_full) for w in job.in_widths})
    return LatencyTable(device, "fake device", "f32", "fp32", "test", curves, scale, other_ms)


def midway(graph, weights, table, *args, **kwargs) -> float:
    """Half-way in predicted ms between the unpruned model and the narrowest state the descent reaches."""
    narrowest = min(allocate(graph, weights, table, 0.0, *args, **kwargs).frontier)[0]
    return (narrowest + predict_ms(table, graph)) / 2


def on_grid(width: int, full: int) -> int:
    return next(w for w in width_grid(full) if w >= width)


def between(width: int, full: int, cost) -> float:
    """cost(w) on the straight line between the grid widths around `width`."""
    grid = width_grid(full)
    return float(np.interp(width, grid, [cost(w) for w in grid]))


def test_the_table_predicts_a_pruned_graph_from_its_curves():
    graph, weights = sparse_model(DEMO_TINY, 128)
    result = prune(graph, weights, 0.6, round_to=1)
    assert any(conv.filters not in width_grid(graph.nodes[conv.index].filters) for conv in result.graph.convs)
    blocked_table = fake_table(graph, other_ms=1.5, device="NPU")
    stepped = sum(fake_ms(Shape.of(conv), on_grid(conv.in_channels, graph.nodes[conv.index].in_channels),
                          on_grid(conv.filters, graph.nodes[conv.index].filters), 8, 16)
                  for conv in result.graph.convs)
    assert predict_ms(blocked_table, result.graph) == pytest.approx(1.25 * stepped + 1.5, rel=1e-9)
    cpu_table = fake_table(graph, other_ms=1.5, device="CPU")
    interpolated = 0.0
    for conv in result.graph.convs:
        shape, original = Shape.of(conv), graph.nodes[conv.index]
        full_ms = fake_ms(shape, original.in_channels, original.filters, 8, 16)
        by_out = between(conv.filters, original.filters,
                         lambda w, s=shape, i=original.in_channels: fake_ms(s, i, w, 8, 16))
        by_in = between(conv.in_channels, original.in_channels,
                        lambda w, s=shape, o=original.filters: fake_ms(s, w, o, 8, 16))
        interpolated += by_out * by_in / full_ms
    assert predict_ms(cpu_table, result.graph) == pytest.approx(1.25 * interpolated + 1.5, rel=1e-9)
    assert predict_ms(cpu_table, result.graph) < predict_ms(blocked_table, result.graph)
    assert predict_ms(blocked_table, graph) > predict_ms(blocked_table, result.graph) > 1.5
    assert width_grid(100) == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 100)
    assert width_grid(100, 64) == (1, 2, 4, 32, 64, 100)  # a coarser step thins the small widths too


def test_the_fit_is_least_squares_and_falls_back_to_an_offset():
    table = fake_table(load_graph(DEMO_TINY, (64, 64)), scale=1.0, other_ms=0.0)
    fitted = table.calibrated(((1.0, 3.0), (2.0, 5.0), (4.0, 9.0)))
    assert fitted.scale == pytest.approx(2.0) and fitted.other_ms == pytest.approx(1.0)
    flat = table.calibrated(((1.0, 3.0), (2.0, 2.0)))
    assert flat.scale == 1.0 and flat.other_ms == pytest.approx(1.0)


def test_a_network_is_priced_between_the_fitted_networks_and_along_the_end_segments_beyond():
    graph = load_graph(DEMO_TINY, (64, 64))
    table = fake_table(graph, scale=1.0, other_ms=0.0)
    # demo-csp's uniform networks at 832 (sum of conv ms, measured ms): narrow ones keep a floor a line misses
    fitted = table.calibrated(((197.0, 160.0), (75.8, 54.8), (28.3, 26.1), (15.0, 21.5)))
    assert fitted.whole_ms(28.3) == pytest.approx(26.1)
    assert fitted.whole_ms(36.14) == pytest.approx(26.1 + (36.14 - 28.3) / (75.8 - 28.3) * (54.8 - 26.1))
    assert fitted.whole_ms(5.0) == pytest.approx(21.5 - 10.0 * (26.1 - 21.5) / (28.3 - 15.0))  # first segment
    assert fitted.whole_ms(297.0) == pytest.approx(160.0 + 100.0 * (160.0 - 54.8) / (197.0 - 75.8))
    assert fitted.scale * 36.14 + fitted.other_ms > 1.04 * fitted.whole_ms(36.14)  # the line's over-prediction
    noisy = table.calibrated(((10.0, 12.0), (20.0, 11.0), (40.0, 30.0)))  # a dip is noise: never cheaper when wider
    assert noisy.whole_ms(15.0) == pytest.approx(12.0) and noisy.whole_ms(30.0) == pytest.approx(21.0)
    assert predict_ms(fitted, graph) == pytest.approx(fitted.whole_ms(predict_ms(table, graph)))
    plain = fake_table(graph, scale=1.25, other_ms=0.5)  # no fitted networks: the line
    assert plain.whole_ms(8.0) == pytest.approx(10.5)


def groups_of(graph):
    constraints = channel_constraints(graph)
    return constraints, {group[0]: group for group in constraints.groups}


def check_allocation(graph, weights, table, allocation, layer_keep, round_to):
    """Ties share one mask of the group's strongest channels per slice, widths are on the grid, rounded and at
    least the floor, and the prediction is the graph's."""
    constraints, groups = groups_of(graph)
    planner = Planner(graph, weights, table, layer_keep, round_to, True)
    for key, group in groups.items():
        width, full, slices = allocation.widths[key], graph.nodes[key].filters, constraints.slices[key]
        masks = [allocation.masks[conv] for conv in group]
        assert all(np.array_equal(mask, masks[0]) for mask in masks) and masks[0].sum() == width
        assert width == full or (width in table.grid(key) and (width // slices) % round_to == 0)
        assert width >= min(full, layer_floor(full, layer_keep))
        scores = np.max([planner.gammas[conv] for conv in group], axis=0).reshape(slices, -1)
        for row, kept in zip(scores, masks[0].reshape(slices, -1), strict=True):
            assert kept.sum() == width // slices
            if not kept.all():
                assert row[kept].min() >= row[~kept].max()
    assert all(allocation.masks[conv].all() for conv in constraints.frozen)
    pruned = apply_allocation(graph, weights, allocation)
    assert predict_ms(table, pruned.graph) == pytest.approx(allocation.predicted_ms, rel=2e-3)  # matched by shape
    return pruned


@pytest.mark.parametrize("cfg, size, layer_keep, round_to", [
    pytest.param(DEMO_TINY, 128, None, 1, id="demo-tiny"),
    pytest.param(DEMO_TINY, 128, 0.25, 8, id="demo-tiny-floor-round"),
    pytest.param(DEMO_CSP, 128, 0.1, 4, id="demo-csp"),
    with_corpus(corpus_cfg("yolov4"), 128, 0.05, 16, id="yolov4"),
])
def test_allocation_meets_the_target_with_ties_floors_and_rounding(cfg, size, layer_keep, round_to):
    graph, weights = sparse_model(cfg, size)
    table = fake_table(graph)
    target = 0.45 * predict_ms(table, graph)
    descent = allocate(graph, weights, table, target, layer_keep, round_to)
    allocation = descent.allocation
    assert allocation.predicted_ms <= target
    assert 0 < allocation.importance < 1
    check_allocation(graph, weights, table, allocation, layer_keep, round_to)
    again = allocate(graph, weights, table, target, layer_keep, round_to).allocation
    assert again.widths == allocation.widths and again.removed == allocation.removed
    ms = [point[0] for point in descent.frontier]
    assert ms[0] == pytest.approx(predict_ms(table, graph)) and ms == sorted(ms, reverse=True)


def test_every_width_is_the_top_of_its_latency_step():
    graph, weights = sparse_model(DEMO_CSP, 128)
    table = fake_table(graph, in_block=32, out_block=32)  # widths cost in steps of 32
    target = midway(graph, weights, table, round_to=1, blocks=False)
    allocation = allocate(graph, weights, table, target, round_to=1, blocks=False).allocation
    _, groups = groups_of(graph)
    narrowed = [key for key in groups if allocation.widths[key] < graph.nodes[key].filters]
    assert narrowed
    planner = Planner(graph, weights, table, None, 1, False)
    for key in narrowed:
        wider = next(w for w in planner.candidates[key] if w > allocation.widths[key])
        assert planner.predicted_ms({**allocation.widths, key: wider}, set()) > allocation.predicted_ms


def test_the_allocator_removes_blocks_where_they_are_what_costs():
    graph, weights = sparse_model(DEMO_CSP, 128)
    from pruneyolo.prune.pruning import residual_blocks

    blocks = residual_blocks(graph, weights)
    heavy = frozenset(conv for block in blocks for conv in range(block.first, block.shortcut))
    table = fake_table(graph, heavy=heavy)
    target = midway(graph, weights, table, 0.1, 4)
    allocation = allocate(graph, weights, table, target, 0.1, 4).allocation
    assert allocation.removed and allocation.predicted_ms <= target
    stages = {block.stride for block in blocks}
    assert all(sum(b.stride == s for b in blocks) > sum(b.stride == s for b in allocation.removed) for s in stages)
    pruned = check_allocation(graph, weights, table, allocation, 0.1, 4)
    assert pruned.shortcuts == len(allocation.removed) and len(pruned.graph.nodes) == \
        len(graph.nodes) - 3 * len(allocation.removed)
    without = allocate(graph, weights, table, target, 0.1, 4, blocks=False)
    assert without.allocation is None or not without.allocation.removed


def test_an_unreachable_target_allocates_nothing():
    graph, weights = sparse_model(DEMO_TINY, 128)
    table = fake_table(graph)
    descent = allocate(graph, weights, table, table.other_ms / 2, None, 1)
    assert descent.allocation is None and min(descent.frontier)[0] > table.other_ms


def test_a_met_allocation_far_under_the_budget_is_retargeted_to_use_it():
    graph, weights = sparse_model(DEMO_CSP, 128)
    table = fake_table(graph)
    target = midway(graph, weights, table, 0.1, 4)
    found = allocate_to_budget(graph, weights, table, Budget(ms=target),
                               lambda result: Measurement(0.8 * predict_ms(table, result.graph), "fake"), 0.1, 4)
    first, chosen = found.trials[0], found.chosen
    assert first.met and first.measured_ms < 0.9 * target  # met, a fifth of the budget unused
    assert chosen is not first and chosen.met and chosen.measured_ms <= target
    assert chosen.allocation.importance > first.allocation.importance
    assert 0.8 * predict_ms(table, found.result.graph) == pytest.approx(chosen.measured_ms)


def test_a_latency_step_does_not_send_the_search_back_and_forth():
    """A device whose latency jumps 25% at 97% of the budget: each retarget lands in the bracket between the last
    target that met and the last that missed, so no allocation is tried twice and the search closes in on the
    step from below."""
    graph, weights = sparse_model(DEMO_CSP, 128)
    table = fake_table(graph)
    goal = midway(graph, weights, table, 0.1, 4)

    def measure(result):
        predicted = predict_ms(table, result.graph)
        return Measurement(predicted * (1.12 if predicted > 0.97 * goal else 0.9), "fake")

    found = allocate_to_budget(graph, weights, table, Budget(ms=goal), measure, 0.1, 4, rounds=6)
    predictions = [round(t.allocation.predicted_ms, 9) for t in found.trials]
    assert len(found.trials) >= 4 and len(set(predictions)) == len(predictions)
    assert found.chosen.met and found.chosen.allocation.predicted_ms > 0.93 * goal


@pytest.mark.parametrize("cfg, heavy_blocks", [
    pytest.param(DEMO_TINY, False, id="demo-tiny"),
    pytest.param(DEMO_CSP, True, id="demo-csp"),
    with_corpus(corpus_cfg("yolov4"), True, id="yolov4"),
])
def test_an_allocated_prune_equals_the_masked_original_in_opencv(cfg, heavy_blocks, tmp_path):
    graph, weights = sparse_model(cfg, 96)
    from pruneyolo.prune.pruning import residual_blocks

    heavy = frozenset(conv for block in residual_blocks(graph, weights) for conv in range(block.first, block.shortcut))
    table = fake_table(graph, heavy=heavy if heavy_blocks else frozenset())
    allocation = allocate(graph, weights, table, midway(graph, weights, table, 0.05, 4), 0.05, 4).allocation
    assert bool(allocation.removed) == heavy_blocks
    zero_cut_channels(weights, allocation.masks)
    for block in allocation.removed:  # a removed block adds nothing when its last conv emits zeros
        last = weights.layers[block.shortcut - 1]
        last.scales[:] = 0
        last.bias[:] = 0
    pruned = apply_allocation(graph, weights, allocation)
    image = random_image(graph)
    expected = head_inputs(graph, weights, tmp_path / "original", image)
    actual = head_inputs(pruned.graph, pruned.weights, tmp_path / "pruned", image)
    for before, after in zip(expected, actual, strict=True):
        assert before.shape == after.shape and relative_error(before, after) < 1e-4


def test_device_alignment_defaults():
    assert device_round("CPU") == 4 and device_round("GPU.1") == 16 and device_round("AUTO:NPU,CPU") == 16
    assert device_round("HETERO:GPU,CPU") == 16 and device_round("FOO") == 4


# --- the command line, on a fake device ------------------------------------------------------------------------------

@pytest.fixture
def fake_device(monkeypatch):
    """`prune --allocate latency` profiles with fake_table and measures ms as the table predicts them + 5%."""
    tables = {}

    def profile(graph, device="CPU", *args, **kwargs):
        tables["table"] = fake_table(graph)
        return tables["table"]

    def ir_measure(workdir, budget, *args, **kwargs):
        return lambda result: Measurement(1.05 * predict_ms(tables["table"], result.graph), "fake")

    monkeypatch.setattr(latency, "profile", profile)
    import pruneyolo.bench.budget as budget_module

    monkeypatch.setattr(budget_module, "ir_measure", ir_measure)
    return tables


@pytest.fixture(scope="module")
def csp_weights(tmp_path_factory):
    graph, weights = sparse_model(DEMO_CSP, 128)
    path = tmp_path_factory.mktemp("weights") / "demo-csp.weights"
    write_weights(path, graph, weights)
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], terminal_width=200)


def test_cli_allocates_measures_retargets_and_writes(fake_device, csp_weights, tmp_path):
    full = predict_ms(fake_table(load_graph(DEMO_CSP, (128, 128))), load_graph(DEMO_CSP, (128, 128)))
    target = round(0.5 * full, 3)
    result = invoke("prune", DEMO_CSP, "--weights", csp_weights, "--size", "128", "--target-ms", target,
                    "--allocate", "latency", "--layer-keep", "0.1", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ ")]
    meets = [row.rstrip("│ ").split()[-1] for row in rows]
    assert meets and set(meets[:-1]) <= {"no"} and meets[-1] == "yes"
    assert "channels rounded to 4" in result.output
    stem = f"alloc_{target:g}ms_demo-csp"
    pruned = load_graph(tmp_path / f"{stem}.cfg", (128, 128))
    assert 1.05 * predict_ms(fake_device["table"], pruned) <= target
    assert (tmp_path / f"{stem}.weights").is_file()
    assert (tmp_path / f"{stem}_frontier.png").read_bytes().startswith(PNG_MAGIC)


def test_cli_unmet_budget_is_one_line_exit_2_nothing_written(fake_device, csp_weights, tmp_path):
    result = invoke("prune", DEMO_CSP, "--weights", csp_weights, "--size", "128", "--target-ms", "0.001",
                    "--allocate", "latency", "-o", tmp_path)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith("error: no allocation meets 0.001 ms per frame set")
    assert "the narrowest allocation predicts" in result.output.splitlines()[-1]
    assert not list(tmp_path.iterdir())


def test_cli_allocates_as_fast_as_another_model_and_keeps_more_than_its_threshold(fake_device, csp_weights,
                                                                                tmp_path, monkeypatch):
    """--target-like: the reference (a global prune of the same weights) is timed, the allocation starts at the
    reference's predicted ms and lands within 3% of its measured ms, keeping more |gamma| than its threshold."""
    import pruneyolo.cli.budget as cli_budget

    graph, weights = load_graph(DEMO_CSP, (128, 128)), None
    from pruneyolo.darknet.weights import read_weights
    weights = read_weights(csp_weights, graph)
    reference_prune = prune(graph, weights, 0.9, 0.1, round_to=4)
    reference_cfg, _ = write_result(reference_prune, tmp_path / "reference", DEMO_CSP)
    timed = {}

    def timed_reference(path, size, args, calib):
        reference_graph = load_graph(path, size)
        timed["ms"] = 1.05 * predict_ms(fake_device["table"], reference_graph)
        return Reference(str(path), reference_graph, None, timed["ms"], "fake")

    monkeypatch.setattr(cli_budget, "timed_reference", timed_reference)
    out = tmp_path / "out"
    result = invoke("prune", DEMO_CSP, "--weights", csp_weights, "--size", "128", "--target-like", reference_cfg,
                    "--allocate", "latency", "--layer-keep", "0.1", "-o", out)
    assert result.exit_code == 0, result.output
    assert f"as fast as {reference_cfg.name}" in result.output
    stem = f"alloc_like_{reference_cfg.stem}_demo-csp"
    allocated = load_graph(out / f"{stem}.cfg", (128, 128))
    assert 1.05 * predict_ms(fake_device["table"], allocated) <= timed["ms"] * 1.03
    kept = float(result.output.split("chose ")[1].split("%")[0]) / 100
    assert kept > threshold_importance(graph, weights, reference_prune.masks) + 0.02, result.output


def test_cli_target_like_is_one_budget_of_three(csp_weights, tmp_path):
    result = invoke("prune", DEMO_CSP, "--weights", csp_weights, "--target-ms", "5", "--target-like", DEMO_TINY,
                    "-o", tmp_path)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "--target-fps or --target-ms or --target-like (give exactly one)" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["profile", "prune"])
def test_an_absent_device_is_one_line_exit_2_nothing_written(command, csp_weights, tmp_path):
    args = ([DEMO_TINY, "--device", "NPU"] if command == "profile" else
            [DEMO_CSP, "--weights", csp_weights, "--target-ms", "5", "--allocate", "latency", "--device", "GPU",
             "-o", tmp_path])
    result = invoke(command, *args)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "is not available; available devices: " in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (("--percent", "0.5", "--allocate", "latency"), "--allocate latency needs a budget"),
    (("--target-ms", "5", "--allocate", "latency", "--shortcuts", "2"), "chooses the residual blocks itself"),
])
def test_cli_refuses_allocation_without_a_budget_or_with_a_count(args, message, csp_weights, tmp_path):
    result = invoke("prune", DEMO_CSP, "--weights", csp_weights, "-o", tmp_path, *args)
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1


# --- a real profile, cached ----------------------------------------------------------------------------------------

SMALL_CFG = """[net]
width=32
height=32
channels=3
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky
[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear
[yolo]
mask=0,1,2
anchors=4,4, 8,8, 12,12
classes=3
num=3
"""


def test_a_profile_is_cached_per_layer_and_network(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL_CFG)
    graph = load_graph(cfg)
    first = latency.profile(graph, "CPU", "f32", "fp32", seconds=0.001, progress=False, fit_seconds=0.05)
    assert set(first.curves) == {0, 1, 2}
    assert sorted(first.curves[0].out_ms) == [1, 2, 4, 8, 16] and first.curves[0].in_ms == {3: first.curves[0].full_ms}
    assert sorted(first.curves[1].in_ms) == [1, 2, 4, 8, 16] and sorted(first.curves[2].in_ms) == [1, 2, 4, 8]
    raws = [raw for raw, _ in first.fit]
    assert len(first.fit) == 3 and raws == sorted(raws, reverse=True) and all(ms > 0 for _, ms in first.fit)
    assert len(list((tmp_path / "cache" / "pruneyolo" / "latency").glob("*.json"))) == 3 + 1  # convs, the fit's set

    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(latency, "measure_job", refuse)
    monkeypatch.setattr(latency, "network_ms", refuse)
    monkeypatch.setattr(latency, "median_ms", refuse)
    monkeypatch.setattr(latency, "conv_node_ms", refuse)
    monkeypatch.setattr(latency, "interleaved_ms", refuse)
    second = latency.profile(graph, "CPU", "f32", "fp32", seconds=0.001, progress=False, fit_seconds=0.05)
    assert second == first
    assert math.isfinite(predict_ms(second, graph))


def test_a_layer_is_timed_without_the_reorders_around_it():
    """A one-layer IR's call also converts its input and output between the caller's layout and the kernel's; the
    counters give the conv alone, a small part of the call for a 3 -> 16 conv on a large image."""
    core = ov.Core()
    model = latency.conv_model(Shape(3, (1, 1), 1, 1, 1, 256, 256, "leaky"), 3, 16, "fp32")
    conv = latency.conv_node_ms(core, model, "CPU", "f32", 0.3)
    call, _ = latency.median_ms(core, model, "CPU", "f32", 0.3)
    assert 0 < conv < 0.9 * call
    both = latency.interleaved_ms(core, {"a": model, "b": model}, "CPU", "f32", 0.3)
    assert set(both) == {"a", "b"} and all(ms > 0 for ms in both.values())
