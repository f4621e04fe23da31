"""Pruning to a budget: the bisection, the budget arithmetic, and `pruneyolo prune --target-fps/--target-ms`."""

from __future__ import annotations

from pathlib import Path

import pytest
from cfg_sources import corpus_cfg, needs_corpus
from click.testing import CliRunner
from fixtures import random_weights, spike_and_slab
from prune_support import sparse_model

from pruneyolo.bench.budget import Budget, Measurement, percent_grid, safe_percent, search, smallest_passing
from pruneyolo.cli.budget import mosaic_tiles
from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import write_weights
from pruneyolo.errors import PruneyoloError
from pruneyolo.prune.pruning import prune

DEMO = Path(__file__).parents[1] / "cfgs" / "demo-tiny.cfg"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def speed_from_bflops(result) -> Measurement:
    """A stand-in device: inferences/s inversely proportional to the pruned model's BFLOPs."""
    return Measurement(1.0 / result.graph.bflops, "fake")


def test_smallest_passing_bisects_and_every_smaller_try_failed():
    candidates = [round(0.05 * i, 2) for i in range(19)]
    for answer in candidates:
        tried = []

        def passes(value, answer=answer, tried=tried):
            tried.append(value)
            return value >= answer

        found = smallest_passing(candidates, passes)
        assert candidates[found] == answer
        assert len(tried) <= 2 + 5
        assert answer in tried and (found == 0 or candidates[found - 1] in tried)
    assert smallest_passing(candidates, lambda value: False) is None


def test_search_chooses_the_smallest_grid_percent_that_meets_the_budget():
    graph = load_graph(DEMO, (128, 128))
    weights = random_weights(graph, 0, gamma=spike_and_slab)
    budget = Budget(fps=3 / graph.bflops)  # a third of the unpruned model's BFLOPs
    found = search(graph, weights, budget, speed_from_bflops, step=0.05, round_to=8)
    grid = percent_grid(safe_percent(graph, weights, 0), 0.05)
    tried = {trial.percent: trial for trial in found.trials}
    chosen = found.chosen
    assert chosen.met and chosen.achieved >= budget.fps and 0 < chosen.percent < grid[-1]
    below = grid[grid.index(chosen.percent) - 1]
    assert below in tried and not tried[below].met
    assert len(found.trials) <= 2 + 5
    for percent in grid[:grid.index(chosen.percent)]:
        assert not budget.met(speed_from_bflops(prune(graph, weights, percent, round_to=8)).value)
    assert found.result.percent == chosen.percent and found.result.round_to == 8
    assert found.result.graph.bflops == chosen.bflops


def test_budget_counts_one_inference_per_mosaic():
    graph = load_graph(DEMO, (416, 416))
    assert mosaic_tiles(4, graph) == 4 and mosaic_tiles(1, graph) == 1
    assert mosaic_tiles(5, graph) == 4  # 416 is not divisible by 3: a 2x2 grid, two mosaics
    fps = Budget(fps=25, streams=5, tiles=4)
    assert fps.mosaics == 2 and fps.hint == "THROUGHPUT"
    assert fps.achieved(60.0) == 30.0 and fps.met(30.0) and not fps.met(24.9)
    ms = Budget(ms=40, streams=5, tiles=4)
    assert ms.hint == "LATENCY" and ms.achieved(15.0) == 30.0 and ms.met(30.0) and not ms.met(40.1)
    with pytest.raises(PruneyoloError, match=r"target_fps or target_ms \(give exactly one\)"):
        Budget(fps=25, ms=40)
    with pytest.raises(PruneyoloError, match="target_fps 0 must be > 0"):
        Budget(fps=0)
    with pytest.raises(PruneyoloError, match="target_ms -5 must be > 0"):
        Budget(ms=-5)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    graph = load_graph(DEMO)
    path = tmp_path_factory.mktemp("weights") / "demo-tiny.weights"
    write_weights(path, graph, random_weights(graph, 0, gamma=spike_and_slab))
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], terminal_width=200)


def test_cli_measures_on_the_device_and_writes_the_choice_and_chart(tiny_weights, tmp_path):
    result = invoke("prune", DEMO, "--weights", tiny_weights, "--size", "128",
                    "--target-fps", "0.01", "--streams", "4", "--seconds", "0.5", "--precision", "f32", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "4 streams in 1 mosaic of 4 tiles" in result.output and "chose percent 0" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ ")]
    assert len(rows) == 1 and "f32" in rows[0] and "yes" in rows[0]
    assert (tmp_path / "prune_0_demo-tiny.cfg").is_file()
    assert (tmp_path / "demo-tiny_budget.png").read_bytes().startswith(PNG_MAGIC)


def test_cli_target_like_times_each_candidate_in_turns_with_the_reference(tiny_weights, tmp_path):
    """The model itself as the reference, timed for real: the unpruned candidate is measured on the reference's
    scale (the same network, so the same ms but for this machine's noise beside other tests), and a choice is
    written."""
    result = invoke("prune", DEMO, "--weights", tiny_weights, "--size", "128", "--target-like", DEMO,
                    "--seconds", "0.5", "--precision", "f32", "--step", "0.25", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    reference_ms = float(result.output.split("as fast as demo-tiny.cfg (")[1].split(" ms")[0])
    rows = {row.split()[1]: row.split() for row in result.output.splitlines() if row.startswith("│ ")}
    assert 0.3 < float(rows["0"][7]) / reference_ms < 3
    assert "chose percent" in result.output and list(tmp_path.glob("prune_*_demo-tiny.cfg"))


def test_a_candidate_beside_the_reference_is_reported_on_the_reference_s_first_timed_scale(monkeypatch):
    """Timed in turns, the candidate took half the reference's time: it is reported as half the reference's first
    measurement, whatever the machine's pace during the turns."""
    from pruneyolo.bench import latency

    paces = iter([{"only": 30.0}, {"reference": 20.0, "candidate": 10.0}, {"reference": 60.0, "candidate": 45.0}])
    monkeypatch.setattr(latency, "turns_ms", lambda *args: next(paces))
    monkeypatch.setattr(latency, "ran_at", lambda compiled: "f32")
    graph = load_graph(DEMO, (64, 64))
    model = latency.network_model(graph, random_weights(graph, 0))
    reference = latency.Reference.timed("only", graph, model, "CPU", "f32", 0.1)
    assert reference.ms == 30.0 and reference.ran == "f32"
    assert reference.beside(model, "CPU", "f32", 0.1) == 15.0
    assert reference.beside(model, "CPU", "f32", 0.1) == 22.5
    budget = Budget(ms=30.0, like="demo-tiny.cfg", tolerance=0.03)
    assert budget.met(30.8) and not budget.met(31.0) and "as fast as demo-tiny.cfg (30.00 ms" in budget.text


def test_cli_unreachable_budget_exits_2_and_writes_no_model(tiny_weights, tmp_path):
    result = invoke("prune", DEMO, "--weights", tiny_weights, "--size", "128",
                    "--target-ms", "0.0001", "--seconds", "0.5", "-o", tmp_path)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith("error: no percent up to the largest safe one meets")
    assert len([line for line in result.output.splitlines() if line.startswith("│ ")]) == 2
    assert not list(tmp_path.glob("*.cfg")) and not list(tmp_path.glob("*.weights"))


@pytest.mark.parametrize("args, message", [
    (("--percent", "0.5", "--target-fps", "25"), "either --percent or a budget"),
    ((), "either --percent or a budget"),
    (("--percent", "0.5", "--shortcuts", "0,2"), "several --shortcuts counts are searched only"),
    (("--target-fps", "25", "--step", "2"), "error: --step 2 must be in (0, 1)"),  # the library's `step`
])
def test_cli_refuses_ambiguous_requests(tiny_weights, tmp_path, args, message):
    result = invoke("prune", DEMO, "--weights", tiny_weights, "-o", tmp_path, *args)
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1


@needs_corpus
def test_several_shortcut_counts_are_searched_and_the_one_keeping_most_parameters_wins():
    graph, weights = sparse_model(corpus_cfg("yolov4"), 128)
    budget = Budget(fps=4 / graph.bflops)
    found = search(graph, weights, budget, speed_from_bflops, shortcut_counts=(0, 8), step=0.05)
    winners = {}
    for shortcuts in (0, 8):
        trials = [t for t in found.trials if t.shortcuts == shortcuts]
        assert trials and any(t.met for t in trials) and any(not t.met for t in trials)
        winners[shortcuts] = min((t for t in trials if t.met), key=lambda t: t.percent)
    assert found.chosen == max(winners.values(), key=lambda t: t.params)
    assert found.result.shortcuts == found.chosen.shortcuts and found.result.graph.params == found.chosen.params
