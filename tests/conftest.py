"""What many test files share: the tests' own folder importable by its helper modules' names (support,
fixtures, runner_support, ...), whatever pytest's import mode, and the fixtures several files used to define
each for itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

DEMO = TESTS.parent / "cfgs" / "demo-tiny.cfg"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")  # torch's and OpenCV's pools in subprocesses


def worker_threads() -> int | None:
    """Under pytest-xdist, each worker's share of this process's cores (None outside xdist): N workers that each
    let torch and OpenCV use every core oversubscribe the machine N times over."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    return max(1, len(os.sched_getaffinity(0)) // workers) if workers else None


def pytest_configure(config):
    """Under xdist: torch and OpenCV in this worker, and in the subprocesses it starts (tools, CLI runs), use the
    worker's share of the cores unless the environment already says how many."""
    threads = worker_threads()
    if threads is None:
        return
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))


@pytest.fixture(scope="session")
def tiny_ir(tmp_path_factory) -> Path:
    """The runner tests' 128x128 IR whose detections are known by construction (runner_support.make_ir)."""
    from runner_support import make_ir

    return make_ir(tmp_path_factory.mktemp("ir") / "tiny.xml", 128, 128, stride=16)


@pytest.fixture(scope="session")
def demo_weights(tmp_path_factory) -> Path:
    """demo-tiny.cfg's random weights (seed 0) as a .weights file."""
    from fixtures import random_weights

    from pruneyolo.darknet.graph import load_graph
    from pruneyolo.darknet.weights import write_weights

    graph = load_graph(DEMO)
    path = tmp_path_factory.mktemp("demo") / "demo-tiny.weights"
    write_weights(path, graph, random_weights(graph, 0))
    return path


@pytest.fixture
def one_thread():
    """torch on one thread for the test (exact, repeatable sums; no contention with the other workers)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
