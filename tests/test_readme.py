"""Every shell command in the README runs as written in a fresh copy of the repository, or is a synopsis of a real
command (placeholders in capitals or [options]), or is listed below with the reason it is not run here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pruneyolo.cli.main import COMMANDS

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
NOT_RUN = {
    "tools/demo": "the whole demo (set-up included); .ci/run and a user run it",
    "tools/test": "the whole test suite, of which this test is part",
}
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]*\b|\[")


def shell_lines() -> list[str]:
    """Commands of ```sh blocks and of indented blocks, comments dropped."""
    fenced = [line for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL) for line in block.splitlines()]
    indented = [line[4:] for line in README.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    commands = [line.split("#")[0].strip() for line in fenced + indented]
    return [command for command in commands if command.split(" ")[0] in ("pruneyolo", "python", "tools/demo",
                                                                           "tools/test")]


def runnable() -> list[str]:
    return [c for c in dict.fromkeys(shell_lines()) if c not in NOT_RUN and not PLACEHOLDER.search(c[len("pruneyolo"):])]


def test_every_command_is_run_or_a_synopsis_or_excused():
    lines = shell_lines()
    assert set(NOT_RUN) <= set(lines)
    synopses = [line for line in lines if line not in NOT_RUN and line not in runnable()]
    assert len(synopses) >= 15 and len(runnable()) >= 6
    for line in synopses:
        assert line.split()[0] == "pruneyolo" and line.split()[1] in COMMANDS, line


def test_the_runnable_commands_run_as_written_in_a_fresh_copy(tmp_path):
    shutil.copytree(ROOT / "cfgs", tmp_path / "cfgs")
    tools = Path(sys.executable).parent  # the venv's bin: pruneyolo and python, as after `source .venv/bin/activate`
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    outputs = {}
    for command in runnable():
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
        outputs[command] = done.stdout
    inspect = next(out for command, out in outputs.items() if command.startswith("pruneyolo inspect"))
    assert "cfgs/prune_0.88.cfg" in inspect.splitlines()[0] and "Total BFLOPS" in inspect
    generated = next(out for command, out in outputs.items() if command.startswith("python prune_0.88.py"))
    assert generated.splitlines()[0].startswith("head 0: (1, 30, ")
    assert (tmp_path / "ir" / "prune_0.88.xml").is_file() and (tmp_path / "ir" / "prune_0.88.bin").is_file()
    assert len((tmp_path / "detections.jsonl").read_text().splitlines()) == 16  # 8 frames of each of 2 streams
    assert (tmp_path / "pruned" / "prune_0.3_prune_0.88.cfg").is_file()
