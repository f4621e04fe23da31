"""Frame sources, each read by its own capture thread into a small bounded queue.

Live sources (cameras, URLs, paced `synthetic:...,fps=N`) drop their oldest frame when the queue is full and
count it; files, folders and unpaced synthetic scenes wait for room instead, so nothing of theirs is lost.

`replay:SOURCE[,frames=N]` is the first N frames of any source, read once into memory when the stream opens
(its state stays `connecting` meanwhile), made read-only and served in a cycle at no capture cost (frame k
shows frame k % N) until --max-frames, --duration or a stop, so a run measures the runner and the device alone.
Its frames carry a key (their place in the cycle), so each is resized into its tile once and copied after.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pruneyolo.errors import ArgumentError, PruneyoloError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
NETWORK_TIMEOUT_MS = 5000
SYNTHETIC_SIZES = (32, 4096)  # smallest and largest width or height of a synthetic scene
MAX_SYNTHETIC_OBJECTS = 64
DEFAULT_FRAMES = 30  # replay:'s frames when it names none

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `--source`: its kind, what to open, and `key=value` options (synthetic only)."""

    text: str
    kind: str  # camera | url | video | image | folder | synthetic | replay
    target: str
    options: dict = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Frames keep coming whether or not we read them, so a full queue drops the oldest."""
        return self.kind in ("camera", "url") or (self.kind == "synthetic" and "fps" in self.options)


@dataclass
class Frame:
    """One frame read from a stream, with its per-stream index and when it was read."""

    stream: int
    index: int
    image: np.ndarray
    timestamp: float  # wall clock (time.time) when read
    captured: float  # time.monotonic when read, for latency
    read_seconds: float  # time spent in the reader's read()
    key: tuple[int, int] | None = None  # equal keys in a stream, equal pixels: (opening, place in a replay cycle)


def parse_synthetic(text: str) -> dict:
    """`synthetic:seed=3,size=640x480,objects=4,fps=30` -> options (all optional, checked)."""
    options = {}
    body = text.split(":", 1)[1]
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            if key == "size":
                width, height = (int(v) for v in value.lower().split("x"))
                options["width"], options["height"] = width, height
            elif key in ("seed", "objects"):
                options[key] = int(value)
            elif key == "fps":
                options[key] = float(value)
            else:
                raise ArgumentError("source", f"{text}: unknown option {key!r} (seed, size, objects, fps)")
        except ValueError:
            raise ArgumentError("source", f"{text}: bad value for {key}: {value!r}") from None
    check_synthetic(text, options)
    return options


def check_synthetic(text: str, options: dict) -> None:
    """Reject option values the scene generator cannot honour, naming the option and its valid range."""
    low, high = SYNTHETIC_SIZES
    if not (low <= options.get("width", low) <= high and low <= options.get("height", low) <= high):
        raise ArgumentError("source", f"{text}: size must be between {low}x{low} and {high}x{high}")
    if options.get("seed", 0) < 0:
        raise ArgumentError("source", f"{text}: seed must be 0 or more")
    if not 0 <= options.get("objects", 0) <= MAX_SYNTHETIC_OBJECTS:
        raise ArgumentError("source", f"{text}: objects must be between 0 and {MAX_SYNTHETIC_OBJECTS}")
    if not (math.isfinite(options.get("fps", 1.0)) and options.get("fps", 1.0) > 0):
        raise ArgumentError("source", f"{text}: fps must be a positive number")


def parse_source(text: str) -> SourceSpec:
    """Classify a `--source` argument (no I/O beyond checking what a path is)."""
    if text.startswith("replay:"):
        return parse_replay(text)
    if text.startswith("synthetic:") or text == "synthetic":
        return SourceSpec(text, "synthetic", "", parse_synthetic(text if ":" in text else text + ":"))
    if text.isdigit():
        return SourceSpec(text, "camera", text)
    if text.lower().startswith(URL_SCHEMES):
        return SourceSpec(text, "url", text)
    path = Path(text)
    if path.is_dir():
        return SourceSpec(text, "folder", text)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return SourceSpec(text, "image", text)
    return SourceSpec(text, "video", text)


class SourceError(Exception):
    """A source that cannot be opened or read (reported on its stream, retried with --reconnect)."""


def failure_text(exc: BaseException) -> str:
    """An exception as one line: our own errors by their message, anything else with its type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, (SourceError, PruneyoloError)) else f"{type(exc).__name__}: {text}"


class Reader:
    """What `open_reader` returns: pace() waits for the next frame's turn, read() gives an image or None (the
    end), close(); `key` names the pixels of the frame read last if they come again (a replay), else None."""

    key: int | None = None

    def pace(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CaptureReader(Reader):
    """cv2.VideoCapture for cameras, URLs and video files."""

    def __init__(self, spec: SourceSpec):
        if spec.kind == "url":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS]
            self.capture = cv2.VideoCapture(spec.target, cv2.CAP_ANY, params)
        else:
            self.capture = cv2.VideoCapture(int(spec.target) if spec.kind == "camera" else spec.target)
        if not self.capture.isOpened():
            raise SourceError(f"cannot open {spec.text}")

    def read(self) -> np.ndarray | None:
        ok, image = self.capture.read()
        return image if ok else None

    def close(self) -> None:
        self.capture.release()


class ImagesReader(Reader):
    """An image file or a folder of images, in name order, each read once."""

    def __init__(self, spec: SourceSpec):
        path = Path(spec.target)
        if spec.kind == "image":
            self.paths = [path] if path.is_file() else []
        else:
            self.paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise SourceError(f"no images at {spec.text}")
        self.next = 0

    def read(self) -> np.ndarray | None:
        while self.next < len(self.paths):
            image = cv2.imread(str(self.paths[self.next]), cv2.IMREAD_COLOR)
            self.next += 1
            if image is not None:
                return image
        return None

    def close(self) -> None:
        self.paths = []


class SyntheticReader(Reader):
    """`synthetic:` moving shapes from pruneyolo.synth.SceneStream, optionally paced to a frame rate."""

    def __init__(self, spec: SourceSpec, stream: int):
        from pruneyolo.data.synth import SceneStream

        options = dict(spec.options)
        self.period = 1.0 / options.pop("fps") if "fps" in options else 0.0
        options.setdefault("seed", stream)
        self.scene = SceneStream(**options)
        self.due = time.monotonic()

    def pace(self) -> None:
        """Sleep until the next frame is due (at --source ...,fps=N)."""
        if self.period:
            self.due += self.period
            time.sleep(max(0.0, self.due - time.monotonic()))

    def read(self) -> np.ndarray | None:
        return self.scene.read()[0]


def parse_replay(text: str) -> SourceSpec:
    """`replay:synthetic:seed=1,size=640x480,frames=8` -> a replay spec over the inner source.

    A trailing `,frames=N` belongs to the replay (default DEFAULT_FRAMES); the rest is any `--source`.
    """
    inner, frames = text.split(":", 1)[1], DEFAULT_FRAMES
    head, comma, last = inner.rpartition(",")
    if comma and last.startswith("frames="):
        inner, value = head, last.partition("=")[2]
        if not value.isdigit() or int(value) < 1:
            raise ArgumentError("source", f"{text}: frames must be a whole number >= 1, got {value!r}")
        frames = int(value)
    if not inner or inner.startswith("replay:"):
        raise ArgumentError("source", f"{text}: replay needs a source to read, e.g. "
                                      "replay:synthetic:seed=1,size=640x480,frames=30")
    return SourceSpec(text, "replay", inner, {"frames": frames, "source": parse_source(inner)})


class ReplayReader(Reader):
    """Frames read once from the inner source, served in a cycle; never ends by itself."""

    def __init__(self, spec: SourceSpec, stream: int):
        self.frames = read_frames(spec.options["source"], stream, spec.options["frames"])
        if not self.frames:
            raise SourceError(f"{spec.text}: {spec.target} gave no frames")
        self.served = 0
        self.key = 0  # the place in the cycle of the frame read last

    def read(self) -> np.ndarray:
        self.key = self.served % len(self.frames)
        self.served += 1
        return self.frames[self.key]


def read_frames(spec: SourceSpec, stream: int, count: int) -> list[np.ndarray]:
    """Up to `count` frames of `spec` (fewer if it ends first), each read-only."""
    reader = open_reader(spec, stream)
    frames = []
    try:
        while len(frames) < count:
            reader.pace()
            image = reader.read()
            if image is None:
                break
            image = np.ascontiguousarray(image)
            image.flags.writeable = False
            frames.append(image)
    finally:
        reader.close()
    return frames


def open_reader(spec: SourceSpec, stream: int) -> Reader:
    """The reader of `spec`; raises SourceError if it cannot open."""
    if spec.kind == "synthetic":
        return SyntheticReader(spec, stream)
    if spec.kind == "replay":
        return ReplayReader(spec, stream)
    if spec.kind in ("image", "folder"):
        return ImagesReader(spec)
    return CaptureReader(spec)


@dataclass(frozen=True)
class CapturePolicy:
    """What a capture thread does at the end of its input and on failure."""

    queue_size: int = 2
    loop: bool = False  # restart files, folders and images at their end
    reconnect: bool = False  # retry failed / ended live sources with back-off
    max_frames: int | None = None  # stop after this many frames
    backoff: tuple[float, float] = (0.5, 8.0)  # first and longest retry delay, seconds


class Capture(threading.Thread):
    """Reads one source into a bounded queue in its own thread; `take()` hands frames over oldest first."""

    def __init__(self, stream: int, spec: SourceSpec, policy: CapturePolicy, wake: threading.Event | None = None):
        super().__init__(name=f"capture-{stream}", daemon=True)
        self.stream, self.spec, self.policy = stream, spec, policy
        self.wake = wake or threading.Event()  # set whenever a frame is queued
        self.queue: collections.deque[Frame] = collections.deque()
        self.room = threading.Condition()
        self.halt = threading.Event()
        self.state = "connecting"  # connecting | live | retrying | ended | failed
        self.error = ""
        self.frames_read = 0
        self.opened = 0  # times the source was opened
        self.dropped = 0
        self.reconnects = 0
        self.started_at = 0.0
        self.last_frame_at = 0.0

    @property
    def finished(self) -> bool:
        """Nothing more will ever come from this source, and nothing is waiting in its queue."""
        return self.state in ("ended", "failed") and not self.queue

    def take(self) -> Frame | None:
        """The oldest queued frame, or None."""
        with self.room:
            frame = self.queue.popleft() if self.queue else None
            self.room.notify()
        return frame

    def stop(self) -> int:
        """Ask the thread to end; queued frames are discarded and counted as dropped. Returns that count."""
        self.halt.set()
        with self.room:
            discarded = len(self.queue)
            self.dropped += discarded
            self.queue.clear()
            self.room.notify_all()
        return discarded

    def start(self) -> None:
        self.started_at = time.monotonic()
        super().start()

    def run(self) -> None:
        try:
            self._read_until_done()
        finally:
            if self.state not in ("ended", "failed"):  # halted while connecting or retrying
                self.state = "failed" if self.error else "ended"
            self.wake.set()

    def _read_until_done(self) -> None:
        failures = 0
        while not self.halt.is_set():
            before = self.frames_read
            try:
                done = self._read_source()
            except Exception as exc:  # noqa: BLE001 - whatever a reader raises ends this stream, not the run
                failures = 1 if self.frames_read > before else failures + 1
                if self._may_retry(failure_text(exc), failures):
                    continue
                return
            fresh = self.frames_read > before
            if done:
                self.state = "ended"
                return
            if self.policy.loop and not self.spec.live and fresh:
                continue
            failures = 1 if fresh else failures + 1
            if not self.policy.reconnect:
                self.state = "ended"
                return
            if not self._may_retry(f"{self.spec.text} ended", failures):
                return

    def _read_source(self) -> bool:
        """Open the source and pump it; True when we are done with it (see _pump)."""
        reader = open_reader(self.spec, self.stream)
        self.opened += 1
        try:
            return self._pump(reader)
        finally:
            reader.close()

    def _pump(self, reader) -> bool:
        """Read until the input ends (False) or we are done: halted or at --max-frames (True)."""
        self.state, self.error = "live", ""
        while not self.halt.is_set():
            if self.policy.max_frames is not None and self.frames_read >= self.policy.max_frames:
                return True
            reader.pace()
            started = time.monotonic()
            image = reader.read()
            if image is None:
                return False
            read_seconds = time.monotonic() - started
            key = None if reader.key is None else (self.opened, reader.key)
            self._put(Frame(self.stream, self.frames_read, image, time.time(), time.monotonic(), read_seconds, key))
        return True

    def _put(self, frame: Frame) -> None:
        with self.room:
            if not self.spec.live:
                self.room.wait_for(lambda: len(self.queue) < self.policy.queue_size or self.halt.is_set())
            if self.halt.is_set():
                return
            if len(self.queue) >= self.policy.queue_size:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(frame)
            self.frames_read += 1
            self.last_frame_at = frame.captured
        self.wake.set()

    def _may_retry(self, error: str, failures: int) -> bool:
        """Record and log a failure; with --reconnect wait out the back-off and return True to try again."""
        self.error = error
        if not self.policy.reconnect:
            self.state = "failed"
            log.warning("stream %d (%s) failed: %s", self.stream, self.spec.text, error)
            return False
        self.state = "retrying"
        self.reconnects += 1
        first, longest = self.policy.backoff
        delay = min(longest, first * 2 ** (failures - 1))
        log.warning("stream %d (%s): %s; retrying in %.1f s", self.stream, self.spec.text, error, delay)
        return not self.halt.wait(delay)
