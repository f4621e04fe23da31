"""The runner end to end: every frame accounted for, in order; failing sources retried without stopping the
others; clean stop on SIGTERM / Ctrl-C; bounded memory; device errors; callback exceptions surface."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from click.testing import CliRunner
from runner_support import cell_centre_scene, make_ir

from pruneyolo.cli.main import main
from pruneyolo.detect.boxes import select
from pruneyolo.detect.decode import rows_of
from pruneyolo.detect.mosaic import Layout
from pruneyolo.errors import PruneyoloError
from pruneyolo.runner.adapter import Adapter, check_device, copies
from pruneyolo.runner.metrics import PythonThreadsClock
from pruneyolo.runner.outputs import JsonlSink
from pruneyolo.runner.pipeline import Pipeline, RunOptions, centre_tiles
from pruneyolo.runner.server import LiveState
from pruneyolo.runner.sources import CapturePolicy, parse_source

PRUNEYOLO = str(Path(sys.executable).with_name("pruneyolo"))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def assert_complete(records, summary):
    """Every frame read is in the JSONL or counted dropped; each stream's frames in order, none twice."""
    for stream in summary["streams"]:
        indexes = [r["frame"] for r in records if r["stream"] == stream["stream"]]
        assert indexes == sorted(set(indexes)), f"stream {stream['stream']} out of order or repeated"
        assert len(indexes) + stream["dropped"] == stream["read"], stream
        assert len(indexes) == stream["frames"]


def test_jsonl_has_every_frame_read_or_counts_it_dropped(tiny_ir, tmp_path):
    jsonl, summary = tmp_path / "d.jsonl", tmp_path / "s.json"
    sources = [a for i in range(4) for a in ("--source", f"synthetic:seed={i},size=160x120,fps=400")]
    result = CliRunner().invoke(main, ["run", str(tiny_ir), *sources, "--max-frames", "60", "--jsonl", str(jsonl),
                                       "--summary-json", str(summary), "--quiet", "--nireq", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(summary.read_text())
    assert all(s["read"] == 60 for s in report["streams"])
    assert_complete(read_jsonl(jsonl), report)
    assert "precision" in report and report["stage_ms"]["infer"] > 0


def test_run_keeps_opencv_to_one_thread(tiny_ir):
    """OpenCV's own pool made a letterbox resize cost 1.0 ms of CPU instead of 0.65 beside inference."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        result = CliRunner().invoke(main, ["run", str(tiny_ir), "--source", "synthetic:size=96x64", "--max-frames", "1",
                                           "--quiet"])
        assert result.exit_code == 0, result.output
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_decoded_results_reach_the_pipeline_cut_to_their_confident_rows(tmp_path):
    xml = make_ir(tmp_path / "model.xml", 128, 128, stride=16)
    image = np.concatenate([cell_centre_scene(128, 64, (40, 24), 16), cell_centre_scene(128, 64, (88, 40), 16)])
    got = []
    with Adapter(xml, nireq=1) as adapter:
        pipeline = Pipeline(adapter, [], CapturePolicy(), Layout(1, 1, 128, 128), [], RunOptions(conf=0.5))
        assert adapter.keep == pipeline._keep_confident
        adapter.on_result = lambda _, outputs, __: got.append(outputs[0])
        adapter.submit(image, 0)
        adapter.wait()
        adapter.keep = copies
        adapter.submit(image, 1)
        adapter.wait()
        info = adapter.info
    kept, whole = got
    rows = whole.reshape(-1, whole.shape[-1])
    assert kept.shape == (1, 2, 7) and len(rows) == 64
    np.testing.assert_array_equal(kept[0], rows[rows[:, 4] >= 0.5])
    tiles = centre_tiles(Layout(1, 1, 128, 128))
    (cut, _), (full, _) = (select(rows_of([out], info), tiles, 0.5, 0.45) for out in (kept, whole))
    assert len(cut) == 2 and all(np.array_equal(getattr(cut, name), getattr(full, name))
                                 for name in ("boxes", "scores", "classes"))
    with Adapter(make_ir(tmp_path / "raw.xml", 128, 128, stride=16, heads_mode="raw"), nireq=1) as adapter:
        Pipeline(adapter, [], CapturePolicy(), Layout(1, 1, 128, 128), [], RunOptions())
        assert adapter.keep is copies  # raw heads are decoded whole


class ViewRecorder:
    """A sink keeping, per mosaic, whether stream 0 had a frame and tile 0 of the view."""

    needs_view = True

    def __init__(self):
        self.seen = []

    def write(self, result):
        has_zero = any(f.frame.stream == 0 for f in result.frames)
        self.seen.append((has_zero, result.view[:64, :64].copy()))

    def close(self):
        pass


def test_failing_source_is_retried_and_never_stops_the_others(tiny_ir, tmp_path):
    late = tmp_path / "late.avi"
    specs = [parse_source(str(late))] + [parse_source(f"synthetic:seed={i},size=96x96,fps=100") for i in (1, 2)]
    recorder = ViewRecorder()
    adapter = Adapter(tiny_ir)
    pipeline = Pipeline(adapter, specs, CapturePolicy(reconnect=True, backoff=(0.05, 0.2)),
                        Layout(2, 2, 128, 128), [recorder], RunOptions(duration=3.0, stall_seconds=0.3))
    stop = threading.Event()

    def write_video_later():
        time.sleep(0.8)
        part = tmp_path / "part.avi"
        writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
        for _ in range(5):
            writer.write(np.full((48, 64, 3), 200, np.uint8))
        writer.release()
        os.replace(part, late)

    threading.Thread(target=write_video_later, daemon=True).start()
    with adapter:
        report = pipeline.run(stop)
    first, others = report["streams"][0], report["streams"][1:]
    assert first["reconnects"] >= 2 and first["frames"] >= 5  # failed to open, then read, ended, retried
    assert all(s["frames"] > 100 and s["state"] == "ended" for s in others)
    no_signal = [tile for has_zero, tile in recorder.seen[:10] if not has_zero]
    red = np.all(no_signal[-1] == (0, 0, 255), axis=-1)
    assert red.any(), "the failing stream's tile shows no 'NO SIGNAL' card"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_complete_jsonl(tiny_ir, tmp_path, sig):
    jsonl, summary = tmp_path / "d.jsonl", tmp_path / "s.json"
    sources = [a for i in range(4) for a in ("--source", f"synthetic:seed={i},size=160x120")]
    process = subprocess.Popen([PRUNEYOLO, "run", str(tiny_ir), *sources, "--jsonl", str(jsonl),
                                "--summary-json", str(summary), "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not jsonl.exists() or jsonl.stat().st_size < 4000):
        time.sleep(0.1)
    process.send_signal(sig)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    records = read_jsonl(jsonl)  # every line whole
    report = json.loads(summary.read_text())
    assert_complete(records, report)
    for stream in report["streams"]:  # files and unpaced scenes never drop while running
        indexes = [r["frame"] for r in records if r["stream"] == stream["stream"]]
        assert indexes == list(range(len(indexes)))
    assert "inferences/s" in out


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_is_bounded_over_2000_frames(tiny_ir, tmp_path):
    specs = [parse_source(f"synthetic:seed={i},size=160x120") for i in range(4)]
    samples = []

    def sample(snapshot):
        if snapshot["frames"] >= 200:
            samples.append(rss_mb())

    live = LiveState(["blue", "red"], 4)
    sinks = [JsonlSink(str(tmp_path / "d.jsonl"), ["blue", "red"]), live]
    with Adapter(tiny_ir) as adapter:
        pipeline = Pipeline(adapter, specs, CapturePolicy(max_frames=500), Layout(2, 2, 128, 128), sinks,
                            listeners=[sample, live.publish])
        report = pipeline.run(threading.Event())
    samples.append(rss_mb())
    assert report["frames"] == 2000
    assert len(samples) >= 2 and max(samples) - samples[0] < 50, samples


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread CPU comes from Linux's /proc")
@pytest.mark.parametrize("source", ["schedstat", "stat"])
def test_python_threads_clock_counts_python_threads_and_not_the_runtimes(monkeypatch, source):
    """A Python thread's busy loop counts, also after the thread ended; OpenVINO's own threads do not. From
    schedstat, or from stat's clock ticks where a kernel has no schedstat."""
    exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda path: exists(path) and (source != "stat" or "schedstat" not in path))
    clock = PythonThreadsClock()
    assert clock.file == source
    used, spun, release = [], threading.Event(), threading.Event()

    def spin():
        started = time.thread_time()
        while time.thread_time() - started < 0.3:
            pass
        used.append(time.thread_time() - started)
        spun.set()
        release.wait()

    before = clock()
    worker = threading.Thread(target=spin)
    worker.start()
    spun.wait()
    during = clock()
    release.set()
    worker.join()
    assert abs(during - before - used[0]) < 0.03  # stat counts whole clock ticks, 10 ms each here
    assert during <= clock() < during + 0.03  # what the ended thread used still counts
    rows = ops.parameter([256, 1024], np.float32)  # ~0.5 GFLOP an inference: its Python calls are next to nothing
    product = ops.matmul(rows, ops.constant(np.ones((1024, 1024), np.float32)), False, False)
    compiled = ov.Core().compile_model(ov.Model([product], [rows]), "CPU", {"INFERENCE_NUM_THREADS": "1"})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.ones((256, 1024), np.float32)))
    before, process_before = clock(), time.process_time()
    while time.process_time() - process_before < 0.5:
        request.start_async()
        request.wait()  # the GIL released: the inference runs on OpenVINO's thread
    assert clock() - before < 0.2 * (time.process_time() - process_before)


def test_absent_device_is_one_line_naming_what_exists():
    with pytest.raises(PruneyoloError) as caught:
        check_device(["CPU"], "MYRIAD")
    message = str(caught.value)
    assert "\n" not in message and "CPU" in message and "2022.3 LTS" in message
    with pytest.raises(PruneyoloError, match="'GPU' is not available"):
        check_device(["CPU"], "AUTO:GPU,CPU")
    check_device(["CPU", "GPU.0", "GPU.1"], "MULTI:GPU,CPU")


def test_run_on_myriad_exits_2_with_one_line(tiny_ir):
    result = CliRunner().invoke(main, ["run", str(tiny_ir), "--source", "synthetic:", "--device", "MYRIAD"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "NCS2" in lines[0] and "CPU" in lines[0]


def test_exception_in_callback_is_reraised(tiny_ir):
    adapter = Adapter(tiny_ir, nireq=1)

    def broken(*_):
        raise ValueError("boom in callback")

    adapter.on_result = broken
    with adapter:
        adapter.submit(np.zeros((128, 128, 3), np.uint8), None)
        with pytest.raises(ValueError, match="boom in callback"):
            adapter.wait()
        adapter.wait()  # reported once


def test_devices_lists_cpu():
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0 and "CPU" in result.output and "INFERENCE_PRECISION_HINT" in result.output


@pytest.mark.parametrize("name", ["mosaic.avi", "stream{stream}.avi"])
def test_save_video_writes_the_mosaic_or_one_file_per_stream(tiny_ir, tmp_path, name):
    sources = [a for i in range(2) for a in ("--source", f"synthetic:seed={i},size=96x64")]
    result = CliRunner().invoke(main, ["run", str(tiny_ir), *sources, "--max-frames", "6", "--quiet",
                                       "--save-video", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    per_stream = "{" in name
    expected = {f"stream{i}.avi": (96, 64) for i in range(2)} if per_stream else {"mosaic.avi": (128, 128)}
    for file, size in expected.items():
        video = cv2.VideoCapture(str(tmp_path / file))
        assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == size
        frames = video.get(cv2.CAP_PROP_FRAME_COUNT)
        assert frames == 6 if per_stream else 6 <= frames <= 12  # a round may miss a late stream's frame
