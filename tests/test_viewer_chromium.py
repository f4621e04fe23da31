"""`pruneyolo run --serve`: the viewer page renders the live mosaic in headless Chromium; JSON routes are valid."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from runner_support import make_ir

CHROMIUM = Path("/usr/bin/chromium")
PRUNEYOLO = str(Path(sys.executable).with_name("pruneyolo"))

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is absent (apt-get install chromium); viewer not tested")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_for_frame(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if fetch(base + "frame.jpg")[:2] == b"\xff\xd8":
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the viewer never served a frame: {process.stderr.read() if process.poll() is not None else ''}")


def test_viewer_page_shows_the_mosaic_in_chromium(tmp_path):
    xml = make_ir(tmp_path / "tiny.xml", 256, 256)
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    sources = [a for i in range(4) for a in ("--source", f"synthetic:seed={i},size=320x240,fps=15")]
    process = subprocess.Popen([PRUNEYOLO, "run", str(xml), *sources, "--serve", f"127.0.0.1:{port}",
                                "--duration", "60", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_frame(base, process)
        shot = tmp_path / "viewer.png"
        subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                        "--window-size=1000,700", base],
                       capture_output=True, timeout=90, check=False)
        detections = json.loads(fetch(base + "detections"))
        metrics = json.loads(fetch(base + "metrics.json"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0
    image = cv2.imread(str(shot))
    assert image is not None, "Chromium wrote no screenshot"
    page = image[60:, :]  # below the header bar
    colours = np.unique(page.reshape(-1, 3) // 8, axis=0)
    assert len(colours) > 200, "the page shows no mosaic (too few colours)"
    assert page.std() > 20
    assert {d["stream"] for d in detections} == {0, 1, 2, 3}
    assert all({"frame", "timestamp", "detections", "width", "height"} <= set(d) for d in detections)
    assert len(metrics["streams"]) == 4 and metrics["frames"] > 0
