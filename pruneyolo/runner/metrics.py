"""Run metrics: per-stream FPS and latencies, dropped frames, and time spent in each pipeline stage."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

STAGES = ("capture", "wait", "tile", "infer", "decode", "draw")
FPS_WINDOW = 2.0  # seconds of recent frames the live FPS is measured over


@dataclass
class StreamStats:
    """Counters for one stream, updated by the pipeline thread only."""

    source: str
    frames: int = 0
    detections: int = 0
    latency_total: float = 0.0  # capture -> results written, seconds
    infer_total: float = 0.0
    last_latency: float = 0.0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=512))

    def record(self, now: float, latency: float, infer: float, detections: int) -> None:
        self.frames += 1
        self.detections += detections
        self.latency_total += latency
        self.infer_total += infer
        self.last_latency = latency
        self.recent.append(now)

    def fps(self, now: float) -> float:
        """Frames per second over the last FPS_WINDOW seconds."""
        times = [t for t in self.recent if now - t <= FPS_WINDOW]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


@dataclass
class RunStats:
    """Everything the status line, /metrics and the summary report."""

    streams: list[StreamStats]
    started: float = field(default_factory=time.monotonic)
    mosaics: int = 0
    lost: int = 0  # frames whose mosaic was never inferred (a remote backend that gave up)
    stage_total: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    stage_count: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    def add_stage(self, stage: str, seconds: float, count: int = 1) -> None:
        self.stage_total[stage] += seconds
        self.stage_count[stage] += count

    def stage_ms(self) -> dict[str, float]:
        """Mean milliseconds per item (frame for capture, mosaic otherwise)."""
        return {s: 1000 * self.stage_total[s] / self.stage_count[s] if self.stage_count[s] else 0.0
                for s in STAGES}

    def snapshot(self, captures=(), now: float | None = None) -> dict:
        """A JSON-ready view; `captures` (same order as streams) add state, drops and reconnects."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        streams = []
        for index, stats in enumerate(self.streams):
            ended = index < len(captures) and captures[index].state in ("ended", "failed") and stats.recent
            lifetime = max(stats.recent[-1] - self.started, 1e-9) if ended else elapsed  # to its last frame
            row = {"stream": index, "source": stats.source, "frames": stats.frames,
                   "fps": round(stats.fps(now), 2), "average_fps": round(stats.frames / lifetime, 2),
                   "latency_ms": round(1000 * stats.latency_total / max(stats.frames, 1), 2),
                   "last_latency_ms": round(1000 * stats.last_latency, 2),
                   "infer_ms": round(1000 * stats.infer_total / max(stats.frames, 1), 2),
                   "detections": stats.detections}
            if index < len(captures):
                capture = captures[index]
                row.update(state=capture.state, dropped=capture.dropped, read=capture.frames_read,
                           reconnects=capture.reconnects, error=capture.error)
            streams.append(row)
        frames = sum(s.frames for s in self.streams)
        return {"elapsed_s": round(elapsed, 3), "frames": frames, "fps": round(frames / elapsed, 2),
                "mosaics": self.mosaics, "inferences_per_s": round(self.mosaics / elapsed, 2),
                "dropped": sum(s.get("dropped", 0) for s in streams), "lost": self.lost,
                "stage_ms": {k: round(v, 3) for k, v in self.stage_ms().items()}, "streams": streams}


class PythonThreadsClock:
    """CPU seconds of this process's Python threads (capture, scheduling, decoding, sinks, hand-overs: the
    runner's own work; the other threads are the inference runtime's), from /proc; None where there is none.
    A thread that has ended keeps what it was last seen to have used."""

    def __init__(self):
        self.seen: dict[int, float] = {}
        task = f"/proc/self/task/{threading.get_native_id()}"
        if os.path.exists(f"{task}/schedstat"):  # nanoseconds on the CPU
            self.file, self.read = "schedstat", lambda text: int(text.split()[0]) / 1e9
        elif os.path.exists(f"{task}/stat"):  # user + system clock ticks, after the command name
            tick = os.sysconf("SC_CLK_TCK")
            self.file, self.read = "stat", lambda text: sum(map(int, text.rpartition(")")[2].split()[11:13])) / tick
        else:
            self.file = None

    def __call__(self) -> float | None:
        if self.file is None:
            return None
        for thread in threading.enumerate():
            try:
                with open(f"/proc/self/task/{thread.native_id}/{self.file}") as stat:
                    seconds = self.read(stat.read())
            except OSError:  # ended meanwhile
                continue
            self.seen[thread.native_id] = max(self.seen.get(thread.native_id, 0.0), seconds)
        return sum(self.seen.values())


class PeriodicStatus:
    """A listener that writes a status line whenever another `every` seconds of the run have passed: the live
    line's stand-in in a log, where a redrawn line would be lost."""

    def __init__(self, write: Callable[[str], None], every: float):
        self.write, self.every, self.due = write, every, every

    def __call__(self, snapshot: dict) -> None:
        if snapshot["elapsed_s"] >= self.due:
            self.write(status_line(snapshot))
            self.due = (snapshot["elapsed_s"] // self.every + 1) * self.every


def status_line(snapshot: dict) -> str:
    """One line for the live display."""
    streams = " ".join(f"[{s['stream']}] {s['fps']:.1f}fps {s['last_latency_ms']:.0f}ms"
                       + ("" if s.get("state", "live") == "live" else f" {s['state'].upper()}")
                       for s in snapshot["streams"])
    return (f"{snapshot['elapsed_s']:.0f}s {snapshot['inferences_per_s']:.1f} inf/s "
            f"{snapshot['fps']:.1f} frames/s dropped {snapshot['dropped']} | {streams}")
