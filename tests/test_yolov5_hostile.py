"""Checkpoints crafted as an attacker would (tests/hostile_checkpoints.py): each is refused by `import` in one
line with exit status 2, quickly, writing nothing; names from a file never reach the terminal raw."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import yolov5_support as y5
from click.testing import CliRunner
from hostile_checkpoints import HOSTILE

from pruneyolo.cli.main import main
from pruneyolo.errors import printable
from pruneyolo.yolov5 import torchzip

SECONDS = 10


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_checkpoint_is_refused_in_one_line(name, tmp_path):
    build, words = HOSTILE[name]
    path = build(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out")])
    elapsed = time.monotonic() - started
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and words in lines[0], lines
    assert "\x1b" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert elapsed < SECONDS, f"{name} took {elapsed:.1f} s"


def test_the_nesting_scan_counts_depth_not_length():
    """A long flat list passes; the same number of opcodes nesting lists is refused at MAX_NESTING + 1."""
    flat = b"\x80\x02](" + b"N" * 100_000 + b"e."
    torchzip.scan_pickle(flat)
    deep = b"\x80\x02" + b"]" * (torchzip.MAX_NESTING + 2) + b"a" * (torchzip.MAX_NESTING + 1) + b"."
    with pytest.raises(torchzip.ArchiveError, match=f"nested more than {torchzip.MAX_NESTING} deep"):
        torchzip.scan_pickle(deep)
    torchzip.scan_pickle(b"\x80\x02" + b"]" * torchzip.MAX_NESTING + b"a" * (torchzip.MAX_NESTING - 1) + b".")


def test_nesting_through_the_memo_is_counted():
    """A list put in the memo, filled later and fetched again, keeps its depth (one object, one depth)."""
    chain = b"N" + b"\x85" * (torchzip.MAX_NESTING - 1)  # a tuple just under the limit
    # L = [] (memo 1); L.append(chain); drop L; (memo[1],)
    pickle_ops = b"\x80\x02]r\x01\x00\x00\x00" + chain + b"a0j\x01\x00\x00\x00\x85."
    with pytest.raises(torchzip.ArchiveError, match="nested more than"):
        torchzip.scan_pickle(pickle_ops)


def test_shared_modules_are_recorded_once(tmp_path):
    """YOLOv5 v7 shares one activation object among all Convs: still imported, identical to unshared."""
    model = y5.randomize(y5.v6_layout(np.random.default_rng(3)), 3)
    shared = torch.nn.SiLU()
    for module in model.modules():
        if isinstance(module, y5.Conv) and isinstance(module.act, torch.nn.SiLU):
            module.act = shared
    torch.save({"model": model}, tmp_path / "shared.pt")
    result = CliRunner().invoke(main, ["import", str(tmp_path / "shared.pt"), "-o", str(tmp_path), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "activation=swish" in (tmp_path / "shared.cfg").read_text()


def test_names_with_escapes_are_written_escaped(tmp_path):
    model = y5.randomize(y5.v6_layout(np.random.default_rng(3)), 3)
    model.names = {0: "cat\x1b[2J", 1: "dog\u202eevil"}
    torch.save({"model": model}, tmp_path / "names.pt")
    result = CliRunner().invoke(main, ["import", str(tmp_path / "names.pt"), "-o", str(tmp_path), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "names.names").read_text() == "cat\\x1b[2J\ndog\\u202eevil\n"


def test_printable_escapes_controls_and_keeps_text():
    assert printable("a\nb\x1b[31m\u202ec\u00e9\u4e2d") == "a\\nb\\x1b[31m\\u202ec\u00e9\u4e2d"
