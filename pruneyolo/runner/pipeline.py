"""Scheduling: rounds of mosaics from the capture queues, submitted to the backend, finished in order.

One thread (the caller's) gathers frames, composes mosaics, submits them and finishes results in submission
order, so frames are never reordered within a stream; the backend's callbacks only hand results over.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pruneyolo.detect import CONFIDENCE_THRESHOLD, IOU_THRESHOLD
from pruneyolo.detect.boxes import Detections, confident_rows, select
from pruneyolo.detect.decode import rows_of
from pruneyolo.detect.mosaic import Layout, Placement, blank_mosaic, tile_of, to_mosaic, to_sources
from pruneyolo.runner.backend import Backend
from pruneyolo.runner.compose import Mosaic, MosaicPool
from pruneyolo.runner.metrics import PythonThreadsClock, RunStats, StreamStats
from pruneyolo.runner.outputs import Sink, draw_boxes, draw_caption, draw_no_signal
from pruneyolo.runner.sources import Capture, CapturePolicy, Frame, SourceSpec

STATUS_EVERY = 0.5  # seconds between status snapshots


@dataclass(frozen=True)
class RunOptions:
    """Thresholds and timing of a run."""

    conf: float = CONFIDENCE_THRESHOLD
    iou: float = IOU_THRESHOLD
    gather_seconds: float = 0.1  # once one stream has a frame, how long a round waits for the others
    stall_seconds: float = 2.0  # a live stream silent this long shows "no signal"
    duration: float | None = None  # stop after this many seconds


@dataclass
class MosaicJob:
    """One submitted mosaic: its sequence number, group, each tile's frame and placement (None where no frame)
    and image."""

    seq: int
    group: int
    frames: list[Frame | None]
    placements: tuple[Placement | None, ...]
    mosaic: Mosaic

    @property
    def image(self) -> np.ndarray:
        return self.mosaic.image


@dataclass
class FrameResult:
    """Detections of one source frame, in its own pixels."""

    frame: Frame
    source: str
    detections: Detections
    latency: float  # capture -> detections ready, seconds
    infer: float  # the mosaic's inference latency, seconds


@dataclass
class MosaicResult:
    """What sinks receive: the frames of one mosaic and, if any sink wants it, the annotated view."""

    group: int
    frames: list[FrameResult]
    view: np.ndarray | None


def centre_tiles(layout: Layout) -> Callable[[np.ndarray], np.ndarray]:
    """xyxy mosaic boxes -> the tile holding each centre."""
    return lambda boxes: tile_of((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, layout)


def per_frame(detections: Detections, tiles: np.ndarray, layout: Layout,
              placements: tuple[Placement | None, ...]) -> list[Detections]:
    """A mosaic's detections, each in tiles[i] -> one Detections per tile in its frame's pixels, best first,
    without boxes left with no area after clipping (they lay in the letterbox padding or a frameless tile)."""
    boxes = to_sources(detections.boxes, tiles, layout, placements)
    kept = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    kept = kept[np.argsort(tiles[kept], kind="stable")]
    boxes, scores, classes = boxes[kept], detections.scores[kept], detections.classes[kept]
    ends = np.cumsum(np.bincount(tiles[kept], minlength=layout.tiles)).tolist()
    return [Detections(boxes[start:end], scores[start:end], classes[start:end])
            for start, end in zip([0, *ends], ends, strict=False)]


class Pipeline:
    """Runs sources through one backend into sinks; `run(stop)` returns the final metrics snapshot."""

    def __init__(self, backend: Backend, specs: list[SourceSpec], policy: CapturePolicy, layout: Layout,
                 sinks: list[Sink], options: RunOptions = RunOptions(),
                 listeners: list[Callable[[dict], None]] = ()):
        self.backend, self.layout, self.sinks, self.options = backend, layout, sinks, options
        self.listeners = list(listeners)
        self.wake = threading.Event()
        self.captures = [Capture(i, spec, policy, self.wake) for i, spec in enumerate(specs)]
        tiles = layout.tiles
        self.groups = [list(range(start, min(start + tiles, len(specs)))) for start in range(0, len(specs), tiles)]
        self.metrics = RunStats([StreamStats(spec.text) for spec in specs])
        self.views = [blank_mosaic(layout) for _ in self.groups] if any(s.needs_view for s in sinks) else None
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.pool = MosaicPool(layout, backend.shared_tensor)
        self.finished: dict[int, tuple] = {}
        self.submitted = 0
        self.next_seq = 0
        self.published_at = 0.0
        self.python_cpu = PythonThreadsClock()
        self.steady: list[tuple] = []  # (monotonic, process CPU, mosaics, Python threads' CPU): first, last mark
        backend.on_result = self._on_result
        if backend.info.heads_mode == "decoded":
            backend.keep = self._keep_confident

    def _keep_confident(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """A decoded output cut to the rows `select` can keep, in the backend's thread: no copy of the rest."""
        return [confident_rows(outputs[0], self.options.conf)[None]]

    def _on_result(self, job: MosaicJob, outputs: list[np.ndarray] | None, seconds: float) -> None:
        self.results.put((job, outputs, seconds))
        self.wake.set()

    def snapshot(self) -> dict:
        """The metrics, plus the steady state from the first finished mosaic on (start-up and compilation left
        out, as benchmark_app leaves them out): inferences/s and this process's CPU time (capture, runner and
        inference threads) per inference, and the part of it its Python threads used (everything but the
        inference runtime's threads), marked at most every STATUS_EVERY seconds."""
        snapshot = self.metrics.snapshot(self.captures)
        if servers := self.backend.server_stats():
            snapshot["servers"] = servers
        if self.steady and self.steady[1][2] > self.steady[0][2]:
            (first, first_cpu, first_count, first_python), (last, last_cpu, last_count, last_python) = self.steady
            count = last_count - first_count
            snapshot.update(steady_inferences_per_s=round(count / max(last - first, 1e-9), 2),
                            cpu_ms_per_inference=round(1000 * (last_cpu - first_cpu) / count, 3))
            if first_python is not None:
                snapshot["python_cpu_ms_per_inference"] = round(1000 * (last_python - first_python) / count, 3)
        return snapshot

    def run(self, stop: threading.Event) -> dict:
        """Until every source is done, `stop` is set or the duration passes; always flushes and closes sinks."""
        for capture in self.captures:
            capture.start()
        deadline = None if self.options.duration is None else time.monotonic() + self.options.duration
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                frames = self._gather(stop, deadline)
                if frames is None:
                    break
                for group, streams in enumerate(self.groups):
                    tiles = [frames.get(stream) for stream in streams]
                    if any(tiles):
                        self._submit(group, tiles)
                    self._finish_ready()
                self._publish_due()
        finally:
            self.python_cpu()  # the capture threads' CPU, before they end
            for capture in self.captures:
                capture.stop()
            try:
                try:
                    self.backend.wait()
                finally:  # a remote backend that gave up raises once every result it got is delivered
                    self._finish_ready()
                if self.steady and self.steady[-1][2] < self.metrics.mosaics:
                    self._mark(time.monotonic())
            finally:
                for sink in self.sinks:
                    sink.close()
        for capture in self.captures:
            capture.join(timeout=1.0)
        snapshot = self.snapshot()
        self._publish(snapshot)
        return snapshot

    def _publish_due(self) -> None:
        """Publish a snapshot if the last one is STATUS_EVERY old (also while every stream is down)."""
        if time.monotonic() - self.published_at >= STATUS_EVERY:
            self.published_at = time.monotonic()
            self._publish()

    def _publish(self, snapshot: dict | None = None) -> None:
        snapshot = snapshot or self.snapshot()
        for listener in self.listeners:
            listener(snapshot)

    def _expecting(self, capture: Capture, now: float) -> bool:
        """A stream worth waiting for this round: starting or live, and not silent for stall_seconds."""
        since = capture.last_frame_at or capture.started_at
        return capture.state in ("connecting", "live") and now - since < self.options.stall_seconds

    def _gather(self, stop: threading.Event, deadline: float | None) -> dict[int, Frame] | None:
        """One frame from each stream that has one (waiting briefly for the others); None when all are done."""
        started = time.perf_counter()
        frames: dict[int, Frame] = {}
        until = None
        while True:
            self.wake.clear()
            for capture in self.captures:
                if capture.stream not in frames and (frame := capture.take()) is not None:
                    frames[capture.stream] = frame
            self._finish_ready()
            now = time.monotonic()
            if frames and until is None:
                until = now + self.options.gather_seconds
            waiting = any(c.stream not in frames and self._expecting(c, now) for c in self.captures)
            if frames and (not waiting or now >= until):
                break
            if not frames and all(c.finished for c in self.captures):
                return None
            if stop.is_set() or (deadline is not None and now >= deadline):
                break
            self._publish_due()
            self.wake.wait(min(until - now, 0.05) if until else 0.05)
        self.metrics.add_stage("wait", time.perf_counter() - started)
        for frame in frames.values():
            self.metrics.add_stage("capture", frame.read_seconds)
        return frames

    def _submit(self, group: int, frames: list[Frame | None]) -> None:
        started = time.perf_counter()
        images = [None if f is None else f.image for f in frames]
        keys = [None if f is None or f.key is None else (f.stream, f.key) for f in frames]
        mosaic, placements = self.pool.compose(images, keys)
        self.metrics.add_stage("tile", time.perf_counter() - started)
        job = MosaicJob(self.submitted, group, frames, tuple(placements), mosaic)
        self.submitted += 1
        self.backend.submit(mosaic.tensor, job)

    def _mark(self, now: float) -> None:
        """Note the time, process CPU time and mosaics finished, for the steady-state figures."""
        mark = (now, time.process_time(), self.metrics.mosaics, self.python_cpu())
        self.steady = [self.steady[0] if self.steady else mark, mark]

    def _finish_ready(self) -> None:
        """Finish every completed mosaic whose predecessors are all finished."""
        while True:
            try:
                job, outputs, seconds = self.results.get_nowait()
            except queue.Empty:
                break
            self.finished[job.seq] = (job, outputs, seconds)
        while self.next_seq in self.finished:
            self._finish(*self.finished.pop(self.next_seq))
            self.next_seq += 1

    def _finish(self, job: MosaicJob, outputs: list[np.ndarray] | None, infer: float) -> None:
        """Decode a mosaic's outputs into per-frame results for the sinks (None: never inferred, frames lost)."""
        if outputs is None:
            self.pool.release(job.mosaic)
            self.metrics.lost += sum(frame is not None for frame in job.frames)
            return
        started = time.perf_counter()
        detections, tiles = select(rows_of(outputs, self.backend.info), centre_tiles(self.layout),
                                   self.options.conf, self.options.iou)
        found = per_frame(detections, tiles, self.layout, job.placements)
        results = [FrameResult(frame, self.captures[frame.stream].spec.text, found[index], 0.0, infer)
                   for index, frame in enumerate(job.frames) if frame is not None]
        decoded = time.perf_counter()
        self.metrics.add_stage("infer", infer)
        self.metrics.add_stage("decode", decoded - started)
        view = self._draw(job, results) if self.views else None
        now = time.monotonic()
        for result in results:
            result.latency = now - result.frame.captured
        mosaic = MosaicResult(job.group, results, view)
        for sink in self.sinks:
            sink.write(mosaic)
        self.pool.release(job.mosaic)
        self.metrics.mosaics += 1
        now = time.monotonic()
        if not self.steady or now - self.steady[-1][0] >= STATUS_EVERY:  # the CPU clock is not cheap to read
            self._mark(now)
        for result in results:
            self.metrics.streams[result.frame.stream].record(now, now - result.frame.captured, infer,
                                                            len(result.detections))
        self.metrics.add_stage("draw", time.perf_counter() - decoded)

    def _draw(self, job: MosaicJob, results: list[FrameResult]) -> np.ndarray:
        """Update the group's view: new frames with their boxes, 'no signal' cards for streams that are down."""
        view, layout = self.views[job.group], self.layout
        labels = self.backend.info.labels
        now = time.monotonic()
        by_stream = {r.frame.stream: r for r in results}
        for index, stream in enumerate(self.groups[job.group]):
            x0, y0 = layout.origin(index)
            region = (slice(y0, y0 + layout.tile_height), slice(x0, x0 + layout.tile_width))
            capture = self.captures[stream]
            placement = job.placements[index]
            if placement is not None:
                view[region] = job.image[region]
                dets = by_stream[stream].detections
                draw_boxes(view, to_mosaic(dets.boxes, layout, index, placement), dets.scores, dets.classes, labels)
            elif not self._expecting(capture, now):
                draw_no_signal(view[region], capture.spec.text, capture.state)
            draw_caption(view, f"{stream}: {capture.spec.text}"[:40], (x0 + 2, y0 + 2))
        return view
