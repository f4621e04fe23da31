"""What a new user trips over (issue 25): `run` on a file that is not a complete IR, runs whose sources all
failed, click's usage errors and help that hides the server's paths; each is one line and a documented status."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
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


# --- item 4: messages that mislead ---------------------------------------------------------------------------

def small_cfg(tmp_path: Path, conv_extra: str = "", head: str = "") -> Path:
    """A two-layer cfg (a conv and a 1x1 head conv) with `conv_extra` lines in its first conv and `head` as the
    [yolo] section's options (no head without them)."""
    text = ("[net]\nwidth=32\nheight=32\nchannels=3\n\n[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\n"
            f"stride=2\npad=1\nactivation=leaky\n{conv_extra}\n[convolutional]\nfilters=18\nsize=1\n"
            "activation=linear\n")
    path = tmp_path / "small.cfg"
    path.write_text(text + (f"\n[yolo]\nclasses=1\n{head}" if head else ""))
    return path


def line_of(path: Path, start: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(start))


def test_a_size_the_routes_cannot_take_blames_the_option_and_names_the_stride():
    line = one_line_error(invoke("inspect", DEMO, "--size", "100x100"),
                          f"error: --size 100x100: {DEMO} takes multiples of 32 (e.g. 96x96 or 128x128); its [net] "
                          "has 256x256; at 100x100: [route] route inputs differ in spatial size")
    assert ".cfg:" not in line.split("at 100x100")[0]  # not reported as an error at a cfg line
    assert invoke("inspect", DEMO, "--size", "96x128").exit_code == 0


@pytest.mark.parametrize("key", ["xnor", "binary"])
def test_binarised_convs_are_refused_not_run_as_float(tmp_path, key):
    path = small_cfg(tmp_path, f"{key}=1\n")
    one_line_error(invoke("inspect", path), f"{path}:{line_of(path, key)}: [convolutional] {key}=1: darknet's binarised (XNOR-net) "
                                            "convolution is not supported")
    assert invoke("inspect", small_cfg(tmp_path, f"{key}=0\n")).exit_code == 0


def test_anchors_with_a_missing_comma_read_as_darknets_atof_does(tmp_path):
    path = small_cfg(tmp_path, head="mask=0,1,2\nnum=3\nanchors=10,14, 23,27, 45    61, 37,58\n")
    result = invoke("inspect", "--json", path)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.output)
    assert data["heads"][0]["anchors"] == [[10, 14], [23, 27], [45, 37]]  # atof("45    61") = 45, 37 pairs with it
    assert data["warnings"][0].startswith(f"{path}:{line_of(path, 'anchors')}: [yolo] anchors= part '45    61' is "
                                          "read as 45, as darknet's atof reads it")
    one_line_error(invoke("inspect", small_cfg(tmp_path, head="mask=0\nanchors=10,x14\n")),
                   "anchors= part 'x14' is not a finite number")


def test_a_mask_beyond_num_names_num(tmp_path):
    pairs = ", ".join(f"{k},{k}" for k in range(1, 21))
    path = small_cfg(tmp_path, head=f"mask=15,16,17\nnum=16\nanchors={pairs}\n")
    one_line_error(invoke("inspect", path), f"{path}:{line_of(path, 'num')}: [yolo] mask index 16 is beyond num=16 (indices 0..15",
                   "raise num= or fix mask=")


def test_codegen_of_a_cfg_without_heads_returns_the_last_output_and_is_clean(tmp_path, capsys):
    import torch

    from pruneyolo.darknet.graph import load_graph
    from pruneyolo.nn.build import build_model

    path = small_cfg(tmp_path)
    output = tmp_path / "headless.py"
    result = invoke("codegen", path, "-o", output)
    assert result.exit_code == 0 and "forward returns the last layer's output" in result.output
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", str(output)],
                          check=False, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    graph = load_graph(path)
    namespace: dict = {"__name__": "generated"}
    exec(compile(output.read_text(), str(output), "exec"), namespace)  # noqa: S102 - the file under test
    generated = namespace["Small"]().eval()
    in_process = build_model(graph, None)
    generated.load_state_dict(in_process.state_dict())
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = generated(image), in_process(image)
    assert [tuple(t.shape) for t in ours] == [(1, 18, 16, 16)] and torch.equal(ours[0], theirs[0])
    assert run_as_script(output, capsys) == (0, "output 0: (1, 18, 16, 16)\n")


def run_as_script(path: Path, capsys, *args: str) -> tuple[int, str]:
    """(exit status, stdout) of `python path args` run in this process (torch is imported already)."""
    argv = sys.argv
    sys.argv = [str(path), *args]
    try:
        runpy.run_path(str(path), run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = exc.code or 0
    finally:
        sys.argv = argv
    return status, capsys.readouterr().out


def test_the_generated_file_has_a_help(tmp_path, capsys):
    output = tmp_path / "prune.py"
    assert invoke("codegen", ROOT / "cfgs" / "prune_0.88.cfg", "-o", output).exit_code == 0
    capsys.readouterr()
    status, text = run_as_script(output, capsys, "--help")
    assert status == 0 and text.startswith("usage: prune.py [-h] [weights]") and "Darknet .weights for this cfg" in text


# --- item 5: a cfg without weights ---------------------------------------------------------------------------

def test_random_weights_are_seeded_and_marked(tmp_path):
    import numpy as np

    from pruneyolo.darknet.graph import load_graph
    from pruneyolo.darknet.weights import random_weights
    from pruneyolo.errors import ArgumentError
    from pruneyolo.modelfile import load_model, random_seed

    graph, weights, _ = load_model(DEMO, "random:3", (64, 64), random_ok=True)
    reference = random_weights(load_graph(DEMO, graph.size), 3)
    assert weights.random_seed == 3 and reference.random_seed is None
    assert all(np.array_equal(a, b) for index, layer in weights.layers.items()
               for a, b in zip(layer.arrays(), reference.layers[index].arrays(), strict=True))
    assert load_model(DEMO, "random", (64, 64), random_ok=True).weights.random_seed == 0
    with pytest.raises(ArgumentError, match="only `convert`, `bench` and `prune --target-fps/--target-ms/--target-like`"):
        load_model(DEMO, "random", (64, 64))
    with pytest.raises(ArgumentError, match="random:x: give random or random:SEED"):
        load_model(DEMO, "random:x", (64, 64), random_ok=True)
    assert [random_seed(text) for text in ("random_yolo.weights", "random:12")] == [None, 12]
    with pytest.raises(ArgumentError, match="random:²: give random or random:SEED"):
        random_seed("random:²")
    one_line_error(invoke("prune", DEMO, "--weights", "random", "--percent", "0.5", "-o", tmp_path),
                   "--weights random: random weights are for timing an untrained cfg")


def test_a_prune_of_random_weights_writes_only_its_cfg(tmp_path):
    from pruneyolo.modelfile import load_model
    from pruneyolo.prune.pruning import prune, write_result

    graph, weights, _ = load_model(DEMO, "random:1", (64, 64), random_ok=True)
    result = prune(graph, weights, 0.5)
    assert result.weights.random_seed == 1
    cfg_out, weights_out = write_result(result, tmp_path, str(DEMO))
    assert weights_out is None and cfg_out.is_file() and not list(tmp_path.glob("*.weights"))


def test_convert_with_random_weights_says_so_and_marks_the_ir(tmp_path):
    import openvino as ov

    from pruneyolo.detect.metadata import SECTION, ModelInfo

    result = invoke("convert", DEMO, "--weights", "random:5", "--size", "32", "-o", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert result.output.rstrip().endswith("; random weights (seed 5), not a trained model")
    assert result.stderr.startswith("warning: random weights (seed 5), not a trained model")
    model = ov.Core().read_model(tmp_path / "demo-tiny.xml")
    assert ModelInfo.read(model).random_seed == 5
    assert model.get_rt_info([SECTION, "weights"]).astype(str) == "random, seed 5: not trained"
    result = invoke("run", tmp_path / "demo-tiny.xml", "--source", "synthetic:size=32x32", "--max-frames", "1", "--quiet")
    assert result.exit_code == 0 and result.stderr.startswith(f"warning: {tmp_path / 'demo-tiny.xml'} was converted "
                                                              "with random weights (seed 5), not a trained model")
