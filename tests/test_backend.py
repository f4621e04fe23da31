"""A backend added from this file alone: registered by its scheme, chosen by `run --backend`, fed mosaics by the
pipeline; options it does not take are refused before it opens."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from runner_support import LABELS, cell_centre_scene, make_ir

from pruneyolo.cli.main import main
from pruneyolo.detect.interface import read_interface
from pruneyolo.runner import backend as backends

BRIGHT = 200  # a pixel whose brightest channel is above this belongs to an object


class BrightBlobs:
    """Infers in numpy: each bright blob of the mosaic is one box around it, class blue or red by its colour,
    in the IR's decoded layout ([1, N, 5 + classes] rows of centre, size, objectness, class scores)."""

    def __init__(self, xml, address: str, nireq: int | None = None):
        interface = read_interface(xml)
        self.info = interface.info
        self.input_size = self.info.input_width, self.info.input_height
        self.requests = nireq or 1
        self.precision_used = "numpy"
        self.where = address
        self.on_result = lambda *_: None
        self.mosaics = 0
        self.closed = False

    @staticmethod
    def shared_tensor(image: np.ndarray) -> np.ndarray:
        return image

    def submit(self, image: np.ndarray, userdata) -> None:
        count, _, stats, _ = cv2.connectedComponentsWithStats((image.max(axis=2) > BRIGHT).astype(np.uint8))
        rows = []
        for x, y, width, height, _ in stats[1:count]:
            blob = image[y:y + height, x:x + width].reshape(-1, 3).max(axis=0)
            blue = float(blob[0] > blob[2])
            rows.append([x + width / 2, y + height / 2, width, height, 0.9, blue, 1 - blue])
        self.mosaics += 1
        self.on_result(userdata, [np.array([rows], np.float32).reshape(1, -1, 7)], 0.001)

    def wait(self) -> None:
        pass

    def server_stats(self) -> list[dict]:
        return []

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    opened = []

    def open_fake(xml, address, **options):
        opened.append(BrightBlobs(xml, address, **options))
        return opened[-1]

    kind = backends.BackendKind("fake", open_fake, ("nireq",), "fake:", "the fake backend infers in numpy")
    monkeypatch.setitem(backends.BACKENDS, "fake", kind)
    return opened


def test_a_registered_backend_runs_mosaics_through_the_pipeline(fake, tmp_path):
    xml = make_ir(tmp_path / "model.xml", width=256, height=128)
    blue = tmp_path / "blue.png"
    red = tmp_path / "red.png"
    cv2.imwrite(str(blue), cell_centre_scene(256, 256, (64, 192), 64, (255, 0, 0)))
    cv2.imwrite(str(red), cell_centre_scene(256, 256, (200, 50), 40, (0, 0, 255)))
    jsonl, summary = tmp_path / "d.jsonl", tmp_path / "s.json"
    done = CliRunner().invoke(main, ["run", str(xml), "--source", str(blue), "--source", str(red), "--layout", "2x1",
                                     "--backend", "fake:here", "--nireq", "3", "--jsonl", str(jsonl),
                                     "--summary-json", str(summary), "--quiet"])
    assert done.exit_code == 0, done.output
    (backend,) = fake
    assert (backend.mosaics, backend.requests, backend.closed) == (1, 3, True)
    records = sorted((json.loads(line) for line in jsonl.read_text().splitlines()), key=lambda r: r["stream"])
    found = [[(d["label"], d["box"]) for d in r["detections"]] for r in records]
    assert [[label for label, _ in frame] for frame in found] == [[LABELS[0]], [LABELS[1]]]
    # each square back in its own frame's pixels (the tile holds the 256x256 frame at half size)
    np.testing.assert_allclose(found[0][0][1], [32, 160, 96, 224], atol=2)
    np.testing.assert_allclose(found[1][0][1], [180, 30, 220, 70], atol=2)
    report = json.loads(summary.read_text())
    assert (report["device"], report["precision"], report["requests"]) == ("fake:here", "numpy", 3)


def test_options_the_backend_does_not_take_are_refused_before_it_opens(fake, tmp_path):
    xml = make_ir(tmp_path / "model.xml")
    done = CliRunner().invoke(main, ["run", str(xml), "--source", "synthetic:size=64x64", "--max-frames", "1",
                                     "--backend", "fake:", "--device", "GPU", "--backend-timeout", "3"])
    assert done.exit_code == 2
    assert "--device or --backend-timeout is not taken by the fake backend: the fake backend infers in numpy" \
        in done.output
    assert fake == []


def test_an_unknown_scheme_names_the_registered_ones(fake, tmp_path):
    done = CliRunner().invoke(main, ["run", str(make_ir(tmp_path / "model.xml")), "--source", "synthetic:",
                                     "--backend", "grpc://host:1/m"])
    assert done.exit_code == 2
    assert "--backend 'grpc://host:1/m': no backend for it; give one of openvino:, " \
           "kserve://HOST:PORT[,HOST:PORT...]/NAME, fake:" in done.output
