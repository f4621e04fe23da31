"""What a new user trips over (issue 25): `run` on a file that is not a complete IR, runs whose sources all
failed, click's usage errors and help that hides the server's paths; each is one line and a documented status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from runner_support import make_ir

from pruneyolo.cli.main import main
from pruneyolo.cli.run import ALL_FAILED, SOME_FAILED
from pruneyolo.runner.metrics import PeriodicStatus, RunStats, StreamStats

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "cfgs" / "demo-tiny.cfg"
NOISE = ("Traceback", "tensorflow", "absl", "RuntimeError", "Usage:")


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="pruneyolo")


def one_line_error(result, *words: str) -> str:
    """The run failed with exit 2 and one stderr line holding `words`, no library noise."""
    assert result.exit_code == 2, (result.output, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not any(noise in result.stderr for noise in NOISE), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory) -> Path:
    return make_ir(tmp_path_factory.mktemp("ir") / "tiny.xml", 64, 64, stride=16)


def test_run_on_a_cfg_says_which_convert_to_run():
    line = one_line_error(invoke("run", ROOT / "cfgs" / "prune_0.88.cfg", "--source", "synthetic"),
                          "a Darknet cfg, not an IR")
    assert f"`pruneyolo convert {ROOT / 'cfgs' / 'prune_0.88.cfg'} --weights {ROOT / 'cfgs' / 'prune_0.88.weights'} " \
           "-o DIR`" in line and "DIR/prune_0.88.xml" in line


@pytest.mark.parametrize(("name", "content", "words"), [
    ("photo.jpg", b"\xff\xd8\xff\xe0 not really", ("an image or video", "--source")),
    ("camera", b"\x89PNG\r\n\x1a\n", ("an image or video",)),
    ("model.bin", b"\0" * 8, ("the weights half of an OpenVINO IR", "model.xml, missing")),
    ("model.pt", b"PK\x03\x04", ("a YOLOv5 checkpoint, not an IR", "`pruneyolo convert", "model.pt -o DIR`")),
    ("yolo.weights", b"\0" * 20, ("Darknet weights", "--weights")),
    ("notes.txt", b"hello", ("not a model file pruneyolo knows",)),
    ("page.xml", b"<?xml version='1.0'?><html/>", ("not an OpenVINO IR (no <net> element)",)),
])
def test_run_on_other_files_names_them(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    one_line_error(invoke("run", tmp_path / name, "--source", "synthetic"), f"{tmp_path / name}: ", *words)


def test_run_on_an_ir_without_its_bin_says_so(tiny_ir, tmp_path):
    xml = tmp_path / "lonely.xml"
    xml.write_bytes(tiny_ir.read_bytes())
    one_line_error(invoke("run", xml, "--source", "synthetic"), f"its weights {tmp_path / 'lonely.bin'} are missing")
    one_line_error(invoke("run", tmp_path / "absent.xml", "--source", "synthetic"), "no such file")


@pytest.mark.parametrize(("args", "words"), [
    (["inspect", "{tmp}"], ("Invalid value for 'CFG'", "is a directory", "pruneyolo inspect --help")),
    (["codegen", str(DEMO), "-o", "{tmp}"], ("'-o' / '--output'", "is a directory")),
    (["inspect", str(DEMO), "--size", "0x0"], ("'--size'", "'0x0' is not WxH")),
    (["convert", str(DEMO), "--storage", "fp7"], ("'--storage'",)),
    (["run", "x.xml", "--source", "synthetic", "--nireq", "0"], ("'--nireq'",)),
    (["prune", str(DEMO), "--bogus"], ("No such option '--bogus'",)),
    (["nonsense"], ("No such command 'nonsense'", "pruneyolo --help")),
])
def test_usage_errors_are_one_line(tmp_path, args, words):
    one_line_error(invoke(*(a.replace("{tmp}", str(tmp_path)) for a in args)), *words)


def test_help_names_the_served_paths_and_every_source_kind():
    text = " ".join(invoke("run", "--help").output.split())
    for path in ("/ the live view", "/stream.mjpg", "/frame.jpg", "/detections", "/metrics ", "/metrics.json"):
        assert path in text
    assert "objects=" in text and "replay:SOURCE[,frames=N]" in text


def test_a_run_whose_only_source_failed_exits_all_failed(tiny_ir, tmp_path):
    result = invoke("run", tiny_ir, "--source", tmp_path / "nope.mp4", "--quiet")
    assert result.exit_code == ALL_FAILED, (result.output, result.stderr)
    assert result.stderr.splitlines()[-1] == f"error: every source failed: stream 0 ({tmp_path / 'nope.mp4'}): " \
                                             f"cannot open {tmp_path / 'nope.mp4'}"


def test_a_run_with_one_failed_source_exits_some_failed_and_logs_status(tiny_ir, tmp_path):
    (tmp_path / "empty").mkdir()
    summary = tmp_path / "summary.json"
    result = invoke("run", tiny_ir, "--source", tmp_path / "empty", "--source", "synthetic:seed=1,size=64x48,fps=10",
                    "--max-frames", "8", "--status-every", "0.5", "--summary-json", summary)  # 0.8 s at least
    assert result.exit_code == SOME_FAILED, (result.output, result.stderr)
    assert result.stderr.splitlines()[-1] == f"warning: 1 of 2 sources failed: stream 0 ({tmp_path / 'empty'}): " \
                                             f"no images at {tmp_path / 'empty'}"
    status = [line for line in result.stderr.splitlines() if " inf/s " in line]
    assert status and all("| [0]" in line and "FAILED [1]" in line for line in status), result.stderr
    assert json.loads(summary.read_text())["streams"][1]["frames"] == 8


def test_periodic_status_writes_once_per_period():
    written = []
    status = PeriodicStatus(written.append, 10.0)
    for elapsed in (0.5, 9.9, 10.2, 12.0, 19.9, 31.0, 33.0, 40.0):
        status({"elapsed_s": elapsed, "inferences_per_s": 1.0, "fps": 1.0, "dropped": 0, "streams": []})
    assert [line.split()[0] for line in written] == ["10s", "31s", "40s"]


class Ended:
    state, dropped, frames_read, reconnects, error = "ended", 0, 0, 0, ""


class Live(Ended):
    state = "live"


def test_average_fps_of_a_stream_that_ended_is_over_its_own_lifetime():
    stats = RunStats([StreamStats("clip.mp4"), StreamStats("camera")], started=100.0)
    for k in range(30):  # both at 30 fps for one second; the clip then ends, the camera goes on
        stats.streams[0].record(100.0 + (k + 1) / 30, 0.01, 0.005, 0)
        stats.streams[1].record(100.0 + (k + 1) / 30, 0.01, 0.005, 0)
    streams = stats.snapshot([Ended(), Live()], now=110.0)["streams"]
    assert [s["average_fps"] for s in streams] == [30.0, 3.0]
