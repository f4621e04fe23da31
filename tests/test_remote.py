"""`pruneyolo run --backend kserve://...` against real KServe v2 gRPC servers (tests/kserve_server.py, `kserve`
running OpenVINO), started here as subprocesses: results equal in-process ones bit for bit, servers share the
load, a server killed mid-run loses no frame and one that comes back is used again, mismatches and silence
end in one line, TLS and a bearer token."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from fixtures import random_weights
from remote_support import (
    MISSING,
    SKIP_REASON,
    ServerProcess,
    self_signed,
    served,
    silent_listener,
    wait_for_lines,
)
from runner_support import make_ir

from pruneyolo.darknet.graph import load_graph
from pruneyolo.detect.interface import read_interface
from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.errors import PruneyoloError
from pruneyolo.export.build import IrOptions, build_ir
from pruneyolo.export.convert import save_ir
from pruneyolo.runner.remote import parse_backend

pytestmark = pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)

ROOT = Path(__file__).resolve().parents[1]
PRUNEYOLO = str(Path(sys.executable).with_name("pruneyolo"))
RUN_LIMIT = 240  # seconds for one `pruneyolo run` subprocess (a loaded 2-core machine)
SERVER_ARGS = ("--precision", "f32", "--requests", "2")  # f32 as the in-process runs below; small
# One frame per mosaic: which frames share a mosaic depends on timing, and a neighbouring tile's pixels reach
# across the border into a tile's detections, so only single-frame mosaics compare frame by frame across runs.
ONE_FRAME = "1x1"


def converted_ir(directory: Path, heads: str, size: tuple[int, int] | None = None) -> Path:
    """demo-tiny with random weights, converted as `pruneyolo convert` does (u8 NHWC input, metadata)."""
    graph = load_graph(ROOT / "cfgs" / "demo-tiny.cfg", size)
    return save_ir(build_ir(graph, random_weights(graph), IrOptions(heads)).model, directory / f"demo-{heads}.xml")


def xml_only(xml: Path, directory: Path) -> Path:
    """A copy of the IR's .xml alone, as a client box has it."""
    directory.mkdir(exist_ok=True)
    return Path(shutil.copy(xml, directory / xml.name))


@pytest.fixture(scope="module")
def irs(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("remote-irs")
    return {"raw": converted_ir(directory, "raw"), "decoded": converted_ir(directory, "decoded"),
            "small": make_ir(directory / "small.xml", 128, 128),
            "bright": make_ir(directory / "bright.xml", 256, 256),
            "float_input": make_ir(directory / "float.xml", 256, 256, input_type=ov.Type.f32)}


@pytest.fixture(scope="module")
def pair(irs):
    """Two servers of the raw-heads IR as `demo`, kept for the module (tests must leave them running)."""
    with served((irs["raw"], "demo", *SERVER_ARGS), (irs["raw"], "demo", *SERVER_ARGS)) as servers:
        yield servers


def run_cli(*args, limit: float = RUN_LIMIT) -> subprocess.CompletedProcess:
    return subprocess.run([PRUNEYOLO, "run", *map(str, args)], capture_output=True, text=True, timeout=limit,
                          check=False)


def synthetic(streams: int, size: str = "320x240") -> list[str]:
    return [arg for i in range(streams) for arg in ("--source", f"synthetic:seed={i + 1},size={size}")]


def records(jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def detections_by_frame(jsonl: Path) -> dict[tuple[int, int], list]:
    """(stream, frame) -> detections; fails if a frame appears twice."""
    found = {}
    for record in records(jsonl):
        key = (record["stream"], record["frame"])
        assert key not in found, f"frame {key} reported twice"
        found[key] = record["detections"]
    return found


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback, the error on the last stderr line (after any warning lines), containing `words`."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr[-3000:]
    for word in words:
        assert word in last, (word, last)
    return last


def test_interface_from_the_xml_alone_is_what_openvino_reads(irs, tmp_path):
    for name in ("raw", "decoded", "small"):
        model = ov.Core().read_model(irs[name])
        interface = read_interface(xml_only(irs[name], tmp_path / name))
        assert [(t.names, t.shape, t.datatype) for t in interface.outputs] == [
            (tuple(sorted(o.get_names())), tuple(o.get_shape()), "FP32") for o in model.outputs]
        assert [o.get_any_name() for o in model.outputs] == [t.name for t in interface.outputs]
        assert [(t.name, t.shape, t.datatype) for t in interface.inputs] == [
            ("image", tuple(model.input(0).get_shape()), "UINT8")]
        assert interface.info == ModelInfo.read(model)
    assert [t.name for t in read_interface(irs["raw"]).outputs] == ["head0", "head1"]


def test_backend_urls_are_parsed_or_refused_in_one_line():
    spec = parse_backend("kserve://10.0.0.1:9000,gpu-box:9001,[::1]:9002/prune_0.5")
    assert spec.addresses == ("10.0.0.1:9000", "gpu-box:9001", "[::1]:9002") and spec.model == "prune_0.5"
    for text, words in [("grpc://h:1/m", "expected kserve://"), ("kserve://h:1", "no model name"),
                        ("kserve://h:1/a/b", "no model name"), ("kserve://h/m", "'h' is not HOST:PORT"),
                        ("kserve://h:0/m", "is not HOST:PORT"), ("kserve://h:1,h:1/m", "named twice")]:
        with pytest.raises(PruneyoloError, match=words) as caught:
            parse_backend(text)
        assert "\n" not in str(caught.value)


def test_remote_outputs_are_bit_identical_to_in_process_and_in_order(irs, pair, tmp_path):
    from pruneyolo.runner.adapter import Adapter
    from pruneyolo.runner.prometheus import PrometheusMetrics
    from pruneyolo.runner.remote import BackendOptions, RemoteAdapter

    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(12)]
    got = {"local": [], "remote": []}
    backend = f"kserve://{pair[0].address},{pair[1].address}/demo"
    with Adapter(irs["raw"], "CPU", precision="f32") as local, \
            RemoteAdapter(xml_only(irs["raw"], tmp_path / "client"), backend, BackendOptions(inflight=3)) as remote:
        for name, adapter in (("local", local), ("remote", remote)):
            adapter.on_result = lambda index, outputs, _, into=got[name]: into.append((index, outputs))
            for index, image in enumerate(images):
                adapter.submit(adapter.shared_tensor(image), index)
            adapter.wait()
        stats = remote.server_stats()
        metrics = PrometheusMetrics([], [])
        metrics.follow([], remote.server_stats)
        exposition = metrics.exposition().decode()
    assert [index for index, _ in got["remote"]] == list(range(len(images)))  # submission order
    for (_, local_outputs), (_, remote_outputs) in zip(got["local"], got["remote"], strict=True):
        assert [o.shape for o in remote_outputs] == [(1, 30, 8, 8), (1, 30, 16, 16)]
        for a, b in zip(local_outputs, remote_outputs, strict=True):
            assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    assert sum(s["requests"] for s in stats) == len(images) and all(s["errors"] == 0 for s in stats)
    for server in stats:
        assert f'pruneyolo_backend_requests_total{{server="{server["server"]}"}} {server["requests"]}.0' in exposition
        assert f'pruneyolo_backend_up{{server="{server["server"]}"}} 1.0' in exposition


def test_run_through_two_servers_matches_in_process_and_shares_the_load(irs, pair, tmp_path):
    client_xml = xml_only(irs["raw"], tmp_path / "client")
    sources = [*synthetic(2), "--max-frames", 40, "--layout", ONE_FRAME, "--conf", 0.01, "--quiet"]
    remote = run_cli(client_xml, *sources, "--backend", f"kserve://{pair[0].address},{pair[1].address}/demo",
                     "--jsonl", tmp_path / "remote.jsonl", "--summary-json", tmp_path / "remote.json")
    assert remote.returncode == 0, remote.stderr[-3000:]
    local = run_cli(irs["raw"], *sources, "--precision", "f32", "--jsonl", tmp_path / "local.jsonl")
    assert local.returncode == 0, local.stderr[-3000:]
    remote_frames = detections_by_frame(tmp_path / "remote.jsonl")
    assert sorted(remote_frames) == [(stream, frame) for stream in range(2) for frame in range(40)]
    assert remote_frames == detections_by_frame(tmp_path / "local.jsonl")
    assert sum(len(d) for d in remote_frames.values()) > 0
    summary = json.loads((tmp_path / "remote.json").read_text())
    assert summary["device"].startswith("kserve://") and summary["requests"] == 8  # 4 in flight on each
    requests = [server["requests"] for server in summary["servers"]]
    assert sum(requests) == summary["mosaics"] == 80 and min(requests) >= 20, requests  # both took a share
    assert all(server["errors"] == 0 and server["latency_ms"] > 0 for server in summary["servers"])


def test_a_server_killed_mid_run_loses_no_frame(irs, tmp_path):
    jsonl = tmp_path / "dets.jsonl"
    with served((irs["raw"], "demo", *SERVER_ARGS), (irs["raw"], "demo", *SERVER_ARGS)) as (doomed, survivor):
        run = subprocess.Popen(
            [PRUNEYOLO, "run", xml_only(irs["raw"], tmp_path / "client"), *synthetic(2), "--max-frames", "80",
             "--layout", ONE_FRAME, "--conf", "0.01", "--quiet", "--jsonl", jsonl, "--summary-json",
             tmp_path / "summary.json", "--backend", f"kserve://{doomed.address},{survivor.address}/demo"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for_lines(jsonl, 40, RUN_LIMIT), "the run never got going"
            doomed.kill()
            _, stderr = run.communicate(timeout=RUN_LIMIT)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == 0, stderr[-3000:]
    assert f"kserve://{doomed.address}/demo failed" in stderr
    frames = detections_by_frame(jsonl)
    assert sorted(frames) == [(stream, frame) for stream in range(2) for frame in range(80)]
    local = run_cli(irs["raw"], *synthetic(2), "--max-frames", 80, "--layout", ONE_FRAME, "--conf", 0.01,
                    "--precision", "f32", "--jsonl", tmp_path / "local.jsonl")
    assert local.returncode == 0, local.stderr[-3000:]
    assert frames == detections_by_frame(tmp_path / "local.jsonl")  # resent mosaics came back as themselves
    summary = json.loads((tmp_path / "summary.json").read_text())
    by_address = {server["server"]: server for server in summary["servers"]}
    assert by_address[doomed.address]["state"] == "down" and by_address[doomed.address]["errors"] >= 1
    assert sum(server["requests"] for server in summary["servers"]) == summary["mosaics"] == 160
    assert summary["lost"] == 0


def test_a_server_that_comes_back_is_retried_and_takes_the_waiting_mosaic(irs):
    from pruneyolo.runner.remote import BackendOptions, RemoteAdapter

    with silent_listener() as address:  # a free port to restart the server on
        port = address.rsplit(":", 1)[1]
    image = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    results = []
    first = ServerProcess(irs["bright"], "bright", "--port", port, *SERVER_ARGS)
    second = None
    try:
        first.wait_ready()
        adapter = RemoteAdapter(irs["bright"], f"kserve://127.0.0.1:{port}/bright",
                                BackendOptions(inflight=2, timeout=5, retry_window=RUN_LIMIT))
        with adapter:
            adapter.on_result = lambda index, outputs, _: results.append((index, outputs))
            adapter.submit(image, 0)
            adapter.wait()
            first.kill()
            adapter.submit(image, 1)  # fails on the dead server and waits for one to be up
            second = ServerProcess(irs["bright"], "bright", "--port", port, *SERVER_ARGS)
            second.wait_ready()
            adapter.wait()
            (stats,) = adapter.server_stats()
    finally:
        first.stop()
        if second:
            second.stop()
    assert [index for index, _ in results] == [0, 1]
    assert results[1][1] is not None and np.array_equal(results[0][1][0], results[1][1][0])
    assert stats["state"] == "up" and stats["errors"] >= 1 and stats["requests"] == 2


def test_all_servers_gone_ends_in_one_line_after_the_retry_window_with_every_result_written(irs, tmp_path):
    jsonl = tmp_path / "dets.jsonl"
    with served((irs["raw"], "demo", *SERVER_ARGS)) as (server,):
        run = subprocess.Popen(
            [PRUNEYOLO, "run", irs["raw"], *synthetic(2), "--max-frames", "400", "--layout", ONE_FRAME, "--quiet",
             "--jsonl", jsonl, "--backend", f"kserve://{server.address}/demo", "--backend-retry", "2",
             "--backend-timeout", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for_lines(jsonl, 20, RUN_LIMIT), "the run never got going"
            server.kill()
            killed = time.monotonic()
            _, stderr = run.communicate(timeout=RUN_LIMIT)
            took = time.monotonic() - killed
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    message = assert_one_line_error(subprocess.CompletedProcess([], run.returncode, "", stderr),
                                    f"kserve://{server.address}/demo: no server answered for 2 s",
                                    "every result received was written")
    assert 2 <= took < 60, took  # the 2 s window, a 1 s call, the teardown
    frames = detections_by_frame(jsonl)  # each at most once
    assert len(frames) >= 20  # what was written before the kill is still there
    lost = int(re.search(r"(\d+) mosaics not inferred", message).group(1))
    last = {stream: max(f for s, f in frames if s == stream) for stream in range(2)}  # streams run unevenly
    skipped = [(s, f) for s in range(2) for f in range(last[s]) if (s, f) not in frames]
    assert len(skipped) <= lost, (lost, skipped)  # only the lost mosaics' frames are missing
    last_frame = max(last.values())
    local = run_cli(irs["raw"], *synthetic(2), "--max-frames", last_frame + 1, "--layout", ONE_FRAME, "--precision",
                    "f32", "--jsonl", tmp_path / "local.jsonl")
    assert local.returncode == 0, local.stderr[-3000:]
    expected = detections_by_frame(tmp_path / "local.jsonl")
    wrong = [key for key in frames if frames[key] != expected[key]]
    assert not wrong, wrong[:8]  # results received after a lost one are their own


def test_a_wrong_model_name_shape_or_dtype_is_one_line(irs, tmp_path):
    with served((irs["bright"], "bright", *SERVER_ARGS), (irs["float_input"], "floaty", *SERVER_ARGS)) as servers:
        good, floaty = servers
        common = [*synthetic(1), "--max-frames", 2, "--quiet"]
        name = run_cli(irs["bright"], *common, "--backend", f"kserve://{good.address}/nope")
        assert_one_line_error(name, f"kserve://{good.address}/nope: the server has no model 'nope'",
                              "config.json")
        shape = run_cli(irs["small"], *common, "--backend", f"kserve://{good.address}/bright")
        assert_one_line_error(shape, "takes image UINT8 [1, 256, 256, 3]", "takes image UINT8 [1, 128, 128, 3]",
                              "convert --ovms")
        dtype = run_cli(irs["bright"], *common, "--backend", f"kserve://{floaty.address}/floaty")
        assert_one_line_error(dtype, "takes image FP32 [1, 256, 256, 3]", "takes image UINT8 [1, 256, 256, 3]")
        decoded = run_cli(irs["decoded"], *common, "--backend", f"kserve://{good.address}/bright")
        assert_one_line_error(decoded, "gives Result_", "but", "detections FP32 [1, 960, 10]")
        device = run_cli(irs["bright"], *common, "--backend", f"kserve://{good.address}/bright", "--device", "GPU")
        assert_one_line_error(device, "--device is not taken by the kserve backend: the server's own config chooses")


def test_a_server_that_never_answers_times_out_cleanly(irs, tmp_path):
    with silent_listener() as address:
        started = time.monotonic()
        silent = run_cli(irs["bright"], *synthetic(1), "--max-frames", 2, "--quiet",
                         "--backend", f"kserve://{address}/bright", "--backend-timeout", 1)
        assert time.monotonic() - started < 60  # start-up and one 1 s call, not a hang
    assert_one_line_error(silent, "no server ready, each asked with a 1 s timeout", address, "DEADLINE_EXCEEDED")
    jsonl = tmp_path / "hung.jsonl"
    with served((irs["bright"], "bright", "--hang", *SERVER_ARGS)) as (hung,):
        started = time.monotonic()
        done = run_cli(irs["bright"], *synthetic(1), "--max-frames", 20, "--quiet", "--jsonl", jsonl,
                       "--backend", f"kserve://{hung.address}/bright", "--backend-timeout", 0.5,
                       "--backend-retry", 2)
        took = time.monotonic() - started
    assert_one_line_error(done, "no server answered for 2 s", "DEADLINE_EXCEEDED")
    assert took < 40, took
    assert jsonl.read_text() == ""  # nothing came back, nothing was invented


def test_tls_and_a_bearer_token(irs, tmp_path):
    cert, key = self_signed(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    # The certificate names localhost, so the server listens on every address localhost resolves to; calls get
    # 30 s each: this test is about credentials, and a starved CI box once took over 5 s per call for 30 s.
    with served((irs["bright"], "bright", *SERVER_ARGS, "--host", "localhost", "--tls-cert", cert, "--tls-key", key,
                 "--token", "s3cret-token"), log_dir=tmp_path) as (server,):
        backend = f"kserve://localhost:{server.port}/bright"
        common = [*synthetic(1), "--max-frames", 4, "--quiet", "--backend", backend, "--backend-timeout", 30,
                  "--backend-retry", 120]
        done = run_cli(irs["bright"], *common, "--backend-ca", cert, "--backend-token-file", token,
                       "--jsonl", tmp_path / "ok.jsonl")
        server_log = (tmp_path / "server-0.log").read_text()[-2000:]
        assert done.returncode == 0, (done.stderr[-3000:], server_log)
        assert len(records(tmp_path / "ok.jsonl")) == 4
        refused = run_cli(irs["bright"], *common, "--backend-ca", cert, "--backend-token-file", wrong)
        assert_one_line_error(refused, "credentials refused", "UNAUTHENTICATED", "--backend-token-file")
        plain = run_cli(irs["bright"], *common, "--backend-token-file", token)
        assert_one_line_error(plain, "no server ready", f"localhost:{server.port}")
    misplaced = run_cli(irs["bright"], *synthetic(1), "--max-frames", 1, "--backend-tls")
    assert_one_line_error(misplaced, "--backend-tls is not taken by the openvino backend", "kserve://")
