"""The shipped demo model: the README's first command works on a fresh clone, and what it writes runs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pruneyolo.darknet.graph import load_graph
from pruneyolo.darknet.weights import read_weights
from pruneyolo.export.build import IrOptions, build_ir
from pruneyolo.nn.build import build_model
from pruneyolo.nn.codegen import class_name_for
from tests.support import assert_parity, compile_f32, opencv_heads, opencv_net, random_bgr, to_blob

ROOT = Path(__file__).parents[1]
CFG, WEIGHTS = ROOT / "cfgs" / "prune_0.88.cfg", ROOT / "cfgs" / "prune_0.88.weights"
README_COMMAND = "pruneyolo codegen cfgs/prune_0.88.cfg"


def test_the_readme_opens_with_the_codegen_command():
    commands = [line.strip() for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("    ")]
    assert commands[0] == README_COMMAND


def test_codegen_of_the_shipped_model_writes_a_module_that_imports_and_runs(tmp_path):
    shutil.copytree(ROOT / "cfgs", tmp_path / "cfgs")
    pruneyolo = Path(sys.executable).with_name("pruneyolo")
    done = subprocess.run([str(pruneyolo), *README_COMMAND.split()[1:]], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    generated = tmp_path / "prune_0.88.py"
    assert done.stdout.startswith("wrote prune_0.88.py")
    spec = importlib.util.spec_from_file_location("prune_088", generated)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = load_graph(CFG)
    model = getattr(module, class_name_for(graph.path))().eval().load_darknet_weights(WEIGHTS)
    reference = build_model(graph, read_weights(WEIGHTS, graph)).eval()
    image = torch.rand(1, *graph.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        heads, expected = model(image), reference(image)
    assert [tuple(head.shape) for head in heads] == [(1, 30, *head.out_shape[1:]) for head in graph.heads]
    for ours, theirs in zip(heads, expected, strict=True):
        assert torch.equal(ours, theirs)
    assert float(np.abs(heads[0].numpy()).max()) > 0
    run = subprocess.run([sys.executable, str(generated), str(WEIGHTS)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"head {i}: {(1, 30, *head.out_shape[1:])}" for i, head in
                                       enumerate(graph.heads)]


def test_the_shipped_latency_allocation_is_a_slim_of_demo_csp_that_runs_as_opencv_reads_it(tmp_path):
    """cfgs/prune_fast (tools/slim_fast's allocation, fine-tuned): far fewer parameters and residual blocks than
    demo-csp, and its IR's heads with the trained weights equal OpenCV's Darknet importer's."""
    graph, parent = load_graph(ROOT / "cfgs" / "prune_fast.cfg", (256, 256)), load_graph(ROOT / "cfgs" / "demo-csp.cfg")
    assert graph.params * 10 < parent.params
    assert sum(n.kind == "shortcut" for n in graph.nodes) < sum(n.kind == "shortcut" for n in parent.nodes)
    weights = read_weights(ROOT / "cfgs" / "prune_fast.weights", graph)
    compiled = compile_f32(build_ir(graph, weights, IrOptions("raw")).model)
    frame = random_bgr(graph)
    results = compiled(frame)
    net = opencv_net(graph, weights, tmp_path / "opencv")
    assert_parity([results[output] for output in compiled.outputs], opencv_heads(net, graph, to_blob(frame)))


def test_the_demo_says_which_model_it_runs_and_refuses_an_unknown_one():
    environment = {**os.environ, "PRUNEYOLO_PYTHON": sys.executable, "PRUNEYOLO_DEMO_MODEL": "prune_0.5"}
    done = subprocess.run(["bash", str(ROOT / "tools" / "demo")], env=environment, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: PRUNEYOLO_DEMO_MODEL=prune_0.5: no cfgs/prune_0.5.cfg with its .weights; "
                                   "use prune_0.88 or prune_fast")


@pytest.mark.parametrize("name", ["prune_0.88.cfg", "prune_0.88.weights", "prune_fast.cfg", "prune_fast.weights",
                                  "synth.names", "demo-csp.cfg"])
def test_the_shipped_files_are_tracked_by_git(name):
    listed = subprocess.run(["git", "ls-files", f"cfgs/{name}"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    if listed.returncode:
        pytest.skip("not a git checkout")
    assert listed.stdout.strip() == f"cfgs/{name}"
