"""`pruneyolo prune` (single and sweep), `compare` and `gammas` from the command line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from prune_support import corpus_cfg, needs_corpus, sparse_model

from pruneyolo.cli import main
from pruneyolo.graph import load_graph
from pruneyolo.prune import DEFAULT_ROUND, channel_constraints
from pruneyolo.weights import write_weights

TINY = str(corpus_cfg("yolov4-tiny"))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    graph, weights = sparse_model("yolov4-tiny", 416)
    path = tmp_path_factory.mktemp("weights") / "yolov4-tiny.weights"
    write_weights(path, graph, weights)
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], terminal_width=160)


def test_single_percent_prints_the_stage_table(tiny_weights, tmp_path):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.8", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "|gamma| threshold" in result.output and "stride 32" in result.output
    assert (tmp_path / "prune_0.8_AlexeyAB__darknet__cfg__yolov4-tiny.weights").is_file()


def test_sweep_writes_one_model_per_percent_and_one_table(tiny_weights, tmp_path):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.5,0.7,0.8", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in tmp_path.glob("*.cfg")) == [
        f"prune_{p}_AlexeyAB__darknet__cfg__yolov4-tiny.cfg" for p in ("0.5", "0.7", "0.8")]
    assert "prune sweep" in result.output
    for header in ("percent", "threshold", "params", ".weights MB", "BFLOPs"):
        assert header in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ ")]
    assert [row.split("│")[1].strip() for row in rows] == ["0.5", "0.7", "0.8"]


def test_unsafe_percent_exits_2_with_one_line_and_writes_nothing(tiny_weights, tmp_path):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.5,0.99", "-o", tmp_path)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "largest safe percent is" in result.output
    assert not list(tmp_path.iterdir())


def test_compare_and_gammas(tiny_weights, tmp_path):
    invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.8", "-o", tmp_path)
    pruned = tmp_path / "prune_0.8_AlexeyAB__darknet__cfg__yolov4-tiny.cfg"
    result = invoke("compare", TINY, pruned)
    assert result.exit_code == 0, result.output
    assert "total" in result.output and "%" in result.output
    image = tmp_path / "gammas.png"
    result = invoke("gammas", TINY, "--weights", tiny_weights, "-o", image, "--percent", "0.8")
    assert result.exit_code == 0, result.output
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_corpus
@pytest.mark.parametrize("args, multiple", [((), DEFAULT_ROUND), (("--round", "8"), 8), (("--round", "1"), 1)])
def test_round_keeps_written_channel_counts_multiples(tiny_weights, tmp_path, args, multiple):
    result = invoke("prune", TINY, "--weights", tiny_weights, "--percent", "0.88", "-o", tmp_path, *args)
    assert result.exit_code == 0, result.output
    graph = load_graph(tmp_path / "prune_0.88_AlexeyAB__darknet__cfg__yolov4-tiny.cfg")
    prunable = [graph.nodes[index].filters for index in channel_constraints(graph).prunable]
    assert all(filters % multiple == 0 for filters in prunable)
    assert (multiple == 1) == any(filters % 4 for filters in prunable)
