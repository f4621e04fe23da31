"""Every tools/bench* runs its smallest mode on a CPU without bf16: PRUNEYOLO_NO_BF16=1 hides the CPU's BF16
capability from pruneyolo (bench/variants.py), as a CPU without it would show it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openvino as ov
import pytest
import torch
import yolov8_support as y8
from click.testing import CliRunner
from fixtures import random_weights
from remote_support import MISSING as REMOTE_MISSING
from remote_support import SKIP_REASON as REMOTE_SKIP

from pruneyolo.bench.timing import VARIANTS, available_variants, default_precision, measure_peaks
from pruneyolo.bench.variants import NO_BF16
from pruneyolo.cli.main import main
from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import write_weights

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "cfgs" / "demo-tiny.cfg"
TOOLS = sorted(path.name for path in (ROOT / "tools").glob("bench*"))
STOCK_V8 = ROOT.parent / "shared" / "yolov8" / "fixtures" / "v8n_stock.pt"
PEER_STAMP = ROOT / ".venv-ultralytics" / ".pruneyolo-peer"


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """tools/<name> with this interpreter (no .venv set-up), this tree's pruneyolo and bf16 hidden."""
    path = ROOT / "tools" / name
    python = path.read_text().startswith("#!/usr/bin/env python")
    env = {**os.environ, NO_BF16: "1", "PRUNEYOLO_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable if python else "bash", str(path), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540, check=False)


@pytest.fixture(scope="module")
def demo_ir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ir")
    graph = load_graph(DEMO, (64, 64))
    write_weights(directory / "demo.weights", graph, random_weights(graph, 0))
    result = CliRunner().invoke(main, ["convert", str(DEMO), "--weights", str(directory / "demo.weights"),
                                       "--size", "64", "-o", str(directory)])
    assert result.exit_code == 0, result.output
    return directory / "demo-tiny.xml"


def smallest_run(name: str, tmp_path: Path, ir: Path) -> tuple[list[str], list[str]]:
    """The tool's smallest arguments and words its output must hold."""
    demo = str(DEMO.relative_to(ROOT))
    return {
        "bench_allocate": (["--smallest", "--cache-dir", str(tmp_path / "cache")],
                           ["global 0.5 prune vs latency allocation", "worst prediction error"]),
        "bench_convert": ([demo], ["1 cfgs converted"]),
        "bench_import": ([str(tmp_path / "v11.pt"), "--size", "64x64", "--repeat", "1"],
                         ["(modules only)", "1 checkpoints imported"]),
        "bench_ingraph": (["--input", "64x64", "--layout", "1x1", "--size", "64x48", "--repeat", "2"],
                          ["CPU ms per mosaic"]),
        "bench_peers": (["--tiny", demo, "--base", demo, "--size", "64", "--seconds", "0.05", "--calib-size", "10",
                         "--no-benchmark-app", "--out", str(tmp_path)],
                        ["IR f32 vs OpenCV DNN", "skip IR bf16: this CPU does not have it", "IR default (f32)"]),
        "bench_remote": ([str(ir), "--seconds", "1", "--streams", "1", "--layout", "1x1", "--size", "64x48",
                          "--inflight", "1", "--precision", "f32"], ["target: 1 server >= 0.8 of in process"]),
        "bench_round": (["--cfg", demo, "--size", "64", "--rounds", "1,4", "--percent", "0.3", "--seconds", "0.05",
                         "--repeat", "1", "--peak-seconds", "0.05"], ["least CPU per inference at IR f32"]),
        "bench_run": ([str(ir), "--seconds", "1", "--streams", "1", "--layout", "1x1", "--size", "64x48",
                       "--replay-frames", "2"], ["runner alone"]),
        "bench_synth": (["10", "2"], ["frames/s", "images/s"]),
        "bench_ultralytics": ([str(STOCK_V8), "--sizes", "64", "--seconds", "1", "--rounds", "1", "--images", "1"],
                              ["v8n_stock @ 64: boxes pruneyolo", "1 checkpoints compared"]),
    }[name]


def test_every_bench_tool_is_tested():
    assert TOOLS == ["bench_allocate", "bench_convert", "bench_import", "bench_ingraph", "bench_peers", "bench_remote",
                     "bench_round", "bench_run", "bench_synth", "bench_ultralytics"]


@pytest.mark.parametrize("name", TOOLS)
def test_bench_tool_runs_its_smallest_mode_without_bf16(name, tmp_path, demo_ir):
    if name == "bench_remote" and REMOTE_MISSING:
        pytest.skip(REMOTE_SKIP)
    if name == "bench_ultralytics" and not (STOCK_V8.is_file() and PEER_STAMP.is_file()):
        pytest.skip("needs ../shared/yolov8 and the venv tools/bench_ultralytics makes (.venv-ultralytics)")
    if name == "bench_import":
        torch.save({"model": y8.randomize(y8.v11_layout(), 1)}, tmp_path / "v11.pt")
    args, words = smallest_run(name, tmp_path, demo_ir)
    had_venv = (ROOT / ".venv").exists()
    done = run_tool(name, *args)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "IR bf16 " not in done.stdout.replace("skip IR bf16:", "")
    for word in words:
        assert word in done.stdout, done.stdout[-3000:]
    host = next(line for line in done.stdout.splitlines() if "host: " in line)  # the CPU as the tool saw it
    assert ov.Core().get_property("CPU", "FULL_DEVICE_NAME") in host and "default precision f32" in host
    assert "BF16" not in host and f"{os.cpu_count()} logical cores" in host
    assert (ROOT / ".venv").exists() == had_venv  # PRUNEYOLO_PYTHON: no .venv set up by tools/_venv.sh


def test_no_bf16_hides_the_variant_the_peak_and_the_default(monkeypatch):
    monkeypatch.setenv(NO_BF16, "1")
    core = ov.Core()
    assert "ir-bf16" not in available_variants(core, VARIANTS) and "ir-f32" in available_variants(core, VARIANTS)
    assert default_precision(core) == "f32"
    assert "bf16" not in measure_peaks(core, 0.01)
