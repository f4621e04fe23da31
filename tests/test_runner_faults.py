"""The runner never hangs on a broken source: whatever a capture thread raises ends that stream as `failed`
(retried under --reconnect), in one log line, while the other streams deliver every frame; bad source options
are refused before anything starts."""

import gc
import json
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from pruneyolo.detect.mosaic import Layout
from pruneyolo.errors import PruneyoloError
from pruneyolo.runner import sources
from pruneyolo.runner.adapter import Adapter
from pruneyolo.runner.outputs import JsonlSink
from pruneyolo.runner.pipeline import Pipeline, RunOptions
from pruneyolo.runner.sources import CapturePolicy, parse_source

PRUNEYOLO = str(Path(sys.executable).with_name("pruneyolo"))
RUN_LIMIT = 60.0  # seconds; a run still going after this is a hang, stopped and failed


class ExplodingReader(sources.Reader):
    """Yields `frames` grey frames, then raises a RuntimeError from read() (or from open if frames is None)."""

    def __init__(self, frames: int | None):
        if frames is None:
            raise RuntimeError("sensor on fire\n(while opening)")
        self.left = frames

    def read(self):
        if self.left == 0:
            raise RuntimeError("sensor on fire")
        self.left -= 1
        return np.full((48, 64, 3), 90, np.uint8)


def with_reader(monkeypatch, text: str, make) -> None:
    """Make the source named `text` open with `make()`; every other source opens as usual."""
    real = sources.open_reader
    monkeypatch.setattr(sources, "open_reader", lambda spec, stream: make() if spec.text == text else real(spec, stream))


def run_bounded(pipeline: Pipeline) -> dict:
    """pipeline.run() in a thread; stop it and fail the test if it has not ended within RUN_LIMIT."""
    stop, outcome = threading.Event(), {}

    def target():
        try:
            outcome["report"] = pipeline.run(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(RUN_LIMIT)
    if thread.is_alive():
        stop.set()
        thread.join(10)
        pytest.fail(f"the run did not end within {RUN_LIMIT} s: {pipeline.snapshot()['streams']}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]


def frames_by_stream(path: Path) -> dict[int, list[int]]:
    streams: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        streams.setdefault(record["stream"], []).append(record["frame"])
    return streams


@pytest.mark.parametrize("fails_after, reconnect", [(None, False), (5, False), (5, True)],
                         ids=["raises-on-open", "raises-after-5", "raises-after-5-reconnect"])
def test_exception_in_a_capture_thread_ends_only_that_stream(tiny_ir, tmp_path, monkeypatch, caplog, fails_after,
                                                             reconnect):
    with_reader(monkeypatch, "exploding", lambda: ExplodingReader(fails_after))
    specs = [parse_source("synthetic:seed=1,size=96x72"), parse_source("exploding"),
             parse_source("synthetic:seed=2,size=72x96")]
    jsonl = tmp_path / "d.jsonl"
    policy = CapturePolicy(max_frames=30, reconnect=reconnect, backoff=(0.01, 0.05))
    with Adapter(tiny_ir, nireq=2) as adapter:
        pipeline = Pipeline(adapter, specs, policy, Layout(2, 2, 128, 128), [JsonlSink(str(jsonl), ["a", "b"])])
        report = run_bounded(pipeline)
    healthy, broken = [report["streams"][0], report["streams"][2]], report["streams"][1]
    written = frames_by_stream(jsonl)
    for stream in healthy:
        assert stream["state"] == "ended" and stream["read"] == 30, stream
        assert written[stream["stream"]] == list(range(30))  # every frame of the others, in order
    warnings = [r.getMessage() for r in caplog.records if r.name == sources.__name__]
    assert all("\n" not in w and w.startswith("stream 1 (exploding)") and "RuntimeError: sensor on fire" in w
               for w in warnings), warnings
    if reconnect:  # six opens of 5 frames each reach --max-frames 30; each failure retried and logged
        assert (broken["state"], broken["read"], broken["reconnects"]) == ("ended", 30, 5)
        assert written[1] == list(range(30)) and len(warnings) == 5
    else:
        expected = 0 if fails_after is None else fails_after
        assert (broken["state"], broken["read"], broken["reconnects"]) == ("failed", expected, 0)
        assert broken["error"].startswith("RuntimeError: sensor on fire")
        assert written.get(1, []) == list(range(expected)) and len(warnings) == 1


class ReleaseAfter:
    """A sink that sets `event` once it has seen frame `index` of `stream`."""

    needs_view = False

    def __init__(self, stream: int, index: int, event: threading.Event):
        self.stream, self.index, self.event = stream, index, event

    def write(self, result):
        if any(f.frame.stream == self.stream and f.frame.index == self.index for f in result.frames):
            self.event.set()

    def close(self):
        pass


def test_a_source_stuck_opening_does_not_slow_the_others(tiny_ir, tmp_path, monkeypatch):
    released = threading.Event()

    def stuck():
        released.wait(RUN_LIMIT)
        raise RuntimeError("gave up")

    with_reader(monkeypatch, "stuck", stuck)
    specs = [parse_source("stuck"), parse_source("synthetic:seed=1,size=96x72")]
    jsonl = tmp_path / "d.jsonl"
    # Waiting gather_seconds (0.1) in every round for the stuck stream would take 6 s for 60 rounds.
    options = RunOptions(duration=5.0, stall_seconds=0.2)
    sinks = [JsonlSink(str(jsonl), ["a", "b"]), ReleaseAfter(1, 59, released)]
    try:
        with Adapter(tiny_ir, nireq=2) as adapter:
            report = run_bounded(Pipeline(adapter, specs, CapturePolicy(max_frames=60), Layout(2, 1, 128, 128),
                                          sinks, options))
    finally:
        released.set()
    assert frames_by_stream(jsonl)[1] == list(range(60))  # all 60 before the 5 s deadline
    stuck_stream = report["streams"][0]
    assert (stuck_stream["state"], stuck_stream["read"], stuck_stream["error"]) == ("failed", 0, "RuntimeError: gave up")


def test_the_issue_command_exits_2_at_once(tiny_ir):
    command = [PRUNEYOLO, "run", str(tiny_ir), "--source", "synthetic:seed=1", "--source", "synthetic:objects=-1",
               "--max-frames", "20", "--quiet"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=RUN_LIMIT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --source synthetic:objects=-1: objects must be between 0 and 64"]


@pytest.mark.parametrize("text, words", [
    ("synthetic:objects=-1", "objects must be between 0 and 64"),
    ("synthetic:objects=65", "objects must be between 0 and 64"),
    ("synthetic:objects=many", "bad value for objects"),
    ("synthetic:seed=-3", "seed must be 0 or more"),
    ("synthetic:size=16x16", "size must be between 32x32 and 4096x4096"),
    ("synthetic:size=640x0", "size must be between"),
    ("synthetic:size=640", "bad value for size"),
    ("synthetic:fps=0", "fps must be a positive number"),
    ("synthetic:fps=nan", "fps must be a positive number"),
    ("synthetic:colour=red", "unknown option 'colour'"),
])
def test_bad_synthetic_options_are_one_line_errors(text, words):
    with pytest.raises(PruneyoloError) as caught:
        parse_source(text)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"source {text}: ") and words in message


def test_the_extreme_valid_options_open_and_read():
    for text in ("synthetic:seed=0,objects=0,size=32x32,fps=0.5", "synthetic:objects=64,size=640x32"):
        reader = sources.open_reader(parse_source(text), 0)
        image = reader.read()
        width, height = parse_source(text).options["width"], parse_source(text).options["height"]
        assert image.shape == (height, width, 3) and image.dtype == np.uint8


TEARDOWN = """
import sys
import numpy as np
from pruneyolo.runner.adapter import Adapter
for cycle in range(6):
    with Adapter(sys.argv[1], nireq=2) as adapter:
        seen = []
        adapter.on_result = lambda userdata, outputs, seconds: seen.append(userdata)
        for index in range(6):
            adapter.submit(np.zeros((128, 128, 3), np.uint8), index)
        adapter.wait()
        assert sorted(seen) == list(range(6)), seen
print("closed", cycle + 1)
"""


def test_adapter_teardown_never_deadlocks(tiny_ir):
    # With AsyncInferQueue.set_callback and wait_all(), then queue, then compiled model dropped, this hung
    # in about half of the cycles (the CompiledModel destructor joining a stream thread waiting for the GIL).
    done = subprocess.run([sys.executable, "-c", TEARDOWN, str(tiny_ir)], check=False, capture_output=True,
                          text=True, timeout=RUN_LIMIT)
    assert done.returncode == 0 and done.stdout.split() == ["closed", "6"], done.stderr


def test_closed_adapter_is_freed_at_once_after_delivering_every_result(tiny_ir):
    gc.disable()  # only reference counting may free it
    try:
        closed_adapter_is_freed(tiny_ir)
    finally:
        gc.enable()


def closed_adapter_is_freed(tiny_ir):
    adapter = Adapter(tiny_ir, nireq=2)
    seen = []
    adapter.on_result = lambda userdata, outputs, seconds: seen.append((userdata, outputs[0].shape))
    for index in range(6):
        adapter.submit(np.zeros((128, 128, 3), np.uint8), index)
    adapter.close()
    assert seen == [(index, (1, 64, 7)) for index in range(6)]  # all delivered, in submission order
    assert adapter.idle is None and adapter.compiled is None
    adapter.close()  # twice is fine
    alive = weakref.ref(adapter)
    del adapter  # nothing (no result thread, no cycle) keeps it for the cyclic GC to drop at a random moment
    assert alive() is None
