"""`pruneyolo prune` (single and sweep), `compare` and `gammas` from the command line."""

from __future__ import annotations

import math
import re

import pytest
from cfg_sources import needs_corpus, shipped_cfg
from click.testing import CliRunner
from prune_support import sparse_model

from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import write_weights
from pruneyolo.prune import DEFAULT_ROUND
from pruneyolo.prune.pruning import channel_constraints

TINY = str(shipped_cfg("demo-tiny"))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    graph, weights = sparse_model(shipped_cfg("demo-tiny"), 256)
    path = tmp_path_factory.mktemp("weights") / "demo-tiny.weights"
    write_weights(path, graph, weights)
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], terminal_width=160)


def test_single_percent_prints_the_stage_table(tiny_weights, tmp_path):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.8", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "|gamma| threshold" in result.output and "stride 32" in result.output
    assert (tmp_path / "prune_0.8_demo-tiny.weights").is_file()


def test_sweep_writes_one_model_per_percent_and_one_table(tiny_weights, tmp_path):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.5,0.7,0.8", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in tmp_path.glob("*.cfg")) == [
        f"prune_{p}_demo-tiny.cfg" for p in ("0.5", "0.7", "0.8")]
    assert "prune sweep" in result.output
    for header in ("percent", "threshold", "params", ".weights MB", "BFLOPs"):
        assert header in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ ")]
    assert [row.split("│")[1].strip() for row in rows] == ["0.5", "0.7", "0.8"]


def test_unsafe_percent_exits_2_with_one_line_and_writes_nothing(tiny_weights, tmp_path):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.5,0.99", "-o", tmp_path)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "largest safe percent is" in result.output
    assert "--percent 0.99 " in result.output and "or give --layer-keep K" in result.output  # options, not parameters
    assert not list(tmp_path.iterdir())


def test_layer_keep_prunes_past_the_safe_percent_and_names_the_floored_layers(tiny_weights, tmp_path):
    refused = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.99", "-o", tmp_path)
    assert refused.exit_code == 2 and "give --layer-keep K" in refused.output
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.99", "--layer-keep", "0.05",
                    "--round", "1", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    graph, original = load_graph(tmp_path / "prune_0.99_demo-tiny.cfg"), load_graph(TINY)
    floored = [tuple(map(int, found)) for found in re.findall(r"layer (\d+) \((\d+) -> (\d+)\)", result.output)]
    assert floored
    for index, width, kept in floored:
        assert width == original.nodes[index].filters and kept == graph.nodes[index].filters
        assert max(1, math.ceil(width * 0.05)) <= kept < width
    bad = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.5", "--layer-keep", "1.5")
    assert bad.exit_code == 2 and "--layer-keep" in bad.output


def test_compare_and_gammas(tiny_weights, tmp_path):
    pruned = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.8", "-o", tmp_path)
    assert pruned.exit_code == 0, pruned.output
    result = invoke("compare", TINY, tmp_path / "prune_0.8_demo-tiny.cfg")
    assert result.exit_code == 0, result.output
    total = next(line for line in result.output.splitlines() if "total" in line)
    before, after = load_graph(TINY).params, load_graph(tmp_path / "prune_0.8_demo-tiny.cfg").params
    assert f"{before:,}" in total and f"{after:,} ({after / before:.1%})" in total and after < before / 4
    image = tmp_path / "gammas.png"
    result = invoke("gammas", TINY, "--weights", tiny_weights, "-o", image, "--percent", "0.8")
    assert result.exit_code == 0, result.output
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_corpus
@pytest.mark.parametrize("args, multiple", [((), DEFAULT_ROUND), (("--round", "8"), 8), (("--round", "1"), 1)])
def test_round_keeps_written_channel_counts_multiples(tiny_weights, tmp_path, args, multiple):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.88", "-o", tmp_path, *args)
    assert result.exit_code == 0, result.output
    graph = load_graph(tmp_path / "prune_0.88_demo-tiny.cfg")
    prunable = [graph.nodes[index].filters for index in channel_constraints(graph).prunable]
    assert all(filters % multiple == 0 for filters in prunable)
    assert (multiple == 1) == any(filters % 4 for filters in prunable)
