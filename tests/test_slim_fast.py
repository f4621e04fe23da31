"""tools/slim_fast's verdicts without training or timing: which allocation wins (and ships as prune_fast) and the
table of scores by fine-tune length, from hand-made models and score files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

TOOLS = Path(__file__).resolve().parents[1] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import slim_fast  # a tool, importable once tools/ is on the path


def model(name: str, method: str, stem: str, percent: float | None, map50: float, ms: float,
          base_ms: float = 100.0) -> slim_fast.Model:
    return slim_fast.Model(name, method, Path(f"{stem}.cfg"), Path(f"{stem}.weights"), percent,
                           metrics=SimpleNamespace(map50=map50), ms={"fp32": ms}, base_ms={"fp32": base_ms})


def pair(percent: float, glob: tuple[float, float], alloc: tuple[float, float]):
    """(global, allocation) at `percent`, each given as (mAP50, ms)."""
    return (model(f"global {percent:g}", "global", f"prune_{percent:g}", percent, *glob),
            model(f"allocation {percent:g}", "allocation", f"alloc_{percent:g}", percent, *alloc))


def test_the_fastest_allocation_that_wins_ships_and_a_slower_one_does_not_win():
    base = model("baseline", "baseline", "demo-csp", None, 0.2, 100.0)
    pairs = [pair(0.8, (0.49, 44.0), (0.52, 44.5)),  # +3 points within 3%: wins
             pair(0.88, (0.45, 32.0), (0.48, 33.5)),  # +3 points but 4.7% slower: does not win
             pair(0.92, (0.40, 29.0), (0.43, 28.6)),  # +3 points, faster: wins, and is the fastest
             pair(0.95, (0.38, 28.0), (0.395, 27.0))]  # 3.6% faster but +1.5 points: does not win
    goals, winner = slim_fast.goals_of(base, pairs, shipped_map50=0.5)
    assert winner is pairs[2][1]
    assert [goal.endswith("met") for goal in goals[:4]] == [True, False, True, False]
    assert "+4.7%" in goals[1] and "**missed**" in goals[1]
    # the speed-up goal takes the fastest allocation at or above the shipped mAP50 when there is one
    assert goals[4].startswith("best allocation (allocation 0.8)") and "2.25x" in goals[4]


def test_an_allocation_faster_by_more_than_3_percent_and_2_points_better_wins():
    base = model("baseline", "baseline", "demo-csp", None, 0.2, 100.0)
    pairs = [pair(0.88, (0.528, 29.11), (0.548, 27.73))]  # -4.7%, +2.0 points
    goals, winner = slim_fast.goals_of(base, pairs, shipped_map50=0.609)
    assert winner is pairs[0][1] and goals[0].endswith("met") and "-4.7%" in goals[0]


def test_the_allocation_meeting_the_deployment_targets_ships_even_just_short_of_2_points():
    """60 epochs at the shipped budget: +1.9 points at -5.1% misses the pair target, but 4.53x at mAP50 0.671 meets
    the speed-up and mAP50 targets and beats its global prune on both: it ships. Scoring below its global prune,
    it would not."""
    base = model("baseline", "baseline", "demo-csp", None, 0.206, 121.62)
    pairs = [pair(0.88, (0.652, 28.26), (0.671, 26.82))]
    for glob, alloc in pairs:
        glob.base_ms = alloc.base_ms = {"fp32": 121.62}
    goals, winner = slim_fast.goals_of(base, pairs, shipped_map50=0.609)
    assert winner is pairs[0][1] and "**missed**" in goals[0] and goals[1].endswith("met") and "4.53x" in goals[1]
    pairs[0][1].metrics.map50 = 0.645
    assert slim_fast.goals_of(base, pairs, shipped_map50=0.609)[1] is None


def test_scores_by_epochs_lists_every_length_scored_and_marks_the_missing(tmp_path):
    scores = {"prune_0.88_e5": 0.365, "alloc_0.88_e5": 0.363, "prune_0.88_e10": 0.449, "alloc_0.88_e10": 0.462,
              "prune_0.92_e10": 0.406, "alloc_0.92_e10": 0.432, "prune_0.92": 0.1}  # the last: no epoch count
    for stem, map50 in scores.items():
        (tmp_path / f"{stem}.json").write_text(json.dumps({"mAP50": map50}))
    table = slim_fast.scores_by_epochs([pair(0.88, (0, 0), (0, 0)), pair(0.92, (0, 0), (0, 0))], tmp_path)
    assert table.splitlines() == [
        "| global percent | 5 epochs | 10 epochs |",
        "|---|---|---|",
        "| 0.88 | 0.365 / 0.363 (-0.2) | 0.449 / 0.462 (+1.3) |",
        "| 0.92 | - | 0.406 / 0.432 (+2.6) |"]


def test_each_fine_tune_length_writes_its_own_section(tmp_path, monkeypatch):
    monkeypatch.setattr(slim_fast, "ROOT", tmp_path)
    results = tmp_path / "docs" / "results.md"
    results.parent.mkdir()
    results.write_text("# Results\n\nearlier sections\n")
    slim_fast.write_section(f"{slim_fast.section_title(10)}\n\nten, first run\n", 10)
    slim_fast.write_section(f"{slim_fast.section_title(30)}\n\nthirty\n", 30)
    slim_fast.write_section(f"{slim_fast.section_title(10)}\n\nten, second run\n", 10)
    text = results.read_text()
    assert text.startswith("# Results\n\nearlier sections\n\n## Device-aware slimming, fine-tuned 10 epochs")
    assert "ten, second run" in text and "ten, first run" not in text
    assert text.index("ten, second run") < text.index("fine-tuned 30 epochs") < text.index("thirty")
    assert slim_fast.chart_name(30) == "img/pareto_e30.png"
