"""`/metrics` in the Prometheus text format: per-stream frames, drops, reconnects, state, FPS, latencies and
detections per class, in a registry of the run's own (never prometheus_client's process-wide one).

What follows results (frames, detections, latency and inference histograms) is counted as a sink, after the
JSONL sink has written the same frames; what the capture threads keep (frames read, dropped, reconnects,
state) is read from them at scrape time, and FPS comes from the latest snapshot the pipeline publishes.
"""

from __future__ import annotations

import collections
import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

STATES = ("connecting", "live", "retrying", "ended", "failed")
STREAM_LABELS = ("stream", "source")
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def source_label(text: str) -> str:
    """A source as a label value, with any URL password masked (labels end up in long-lived databases)."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", text)


class CaptureCollector:
    """The capture threads' counters and state, read when scraped, and each stream's latest published FPS."""

    def __init__(self):
        self.captures: list = []
        self.fps: dict[int, float] = {}

    def describe(self) -> list:
        return []

    def collect(self):
        read = CounterMetricFamily("pruneyolo_frames_read", "Frames read from the source", labels=STREAM_LABELS)
        dropped = CounterMetricFamily("pruneyolo_frames_dropped", "Frames read but never inferred (a live "
                                      "source's full queue, or discarded at stop)", labels=STREAM_LABELS)
        reconnects = CounterMetricFamily("pruneyolo_reconnects", "Retries after the source failed or ended",
                                         labels=STREAM_LABELS)
        state = GaugeMetricFamily("pruneyolo_stream_state", "1 for the stream's current state, 0 for the others",
                                  labels=(*STREAM_LABELS, "state"))
        fps = GaugeMetricFamily("pruneyolo_stream_fps", "Frames per second with detections, over the last 2 s",
                                labels=STREAM_LABELS)
        for capture in self.captures:
            labels = [str(capture.stream), source_label(capture.spec.text)]
            read.add_metric(labels, capture.frames_read)
            dropped.add_metric(labels, capture.dropped)
            reconnects.add_metric(labels, capture.reconnects)
            current = capture.state
            for name in STATES:
                state.add_metric([*labels, name], float(current == name))
            fps.add_metric(labels, self.fps.get(capture.stream, 0.0))
        yield from (read, dropped, reconnects, state, fps)


class BackendCollector:
    """With --backend, each model server's requests, errors, latency, outstanding requests and state, read
    from the remote adapter when scraped."""

    def __init__(self):
        self.stats = list

    def describe(self) -> list:
        return []

    def collect(self):
        servers = self.stats()
        if not servers:  # in process: no series at all
            return
        requests = CounterMetricFamily("pruneyolo_backend_requests", "Requests a model server answered",
                                       labels=("server",))
        errors = CounterMetricFamily("pruneyolo_backend_errors", "Requests to a model server that failed or "
                                     "timed out (each resent to another server)", labels=("server",))
        latency = SummaryMetricFamily("pruneyolo_backend_request_seconds", "Answered requests: sent -> reply",
                                      labels=("server",))
        outstanding = GaugeMetricFamily("pruneyolo_backend_outstanding", "Requests awaiting a reply",
                                        labels=("server",))
        up = GaugeMetricFamily("pruneyolo_backend_up", "1 while the server takes requests, 0 while it is "
                               "retried", labels=("server",))
        for server in servers:
            labels = [server["server"]]
            requests.add_metric(labels, server["requests"])
            errors.add_metric(labels, server["errors"])
            latency.add_metric(labels, server["requests"], server["latency_total_s"])
            outstanding.add_metric(labels, server["outstanding"])
            up.add_metric(labels, float(server["state"] == "up"))
        yield from (requests, errors, latency, outstanding, up)


class PrometheusMetrics:
    """A sink and snapshot listener feeding one run's registry (`follow` the pipeline's captures too);
    `exposition()` is the body of `/metrics`."""

    needs_view = False

    def __init__(self, sources: list[str], labels: list[str]):
        self.labels = labels
        self.registry = CollectorRegistry()
        self.frames = Counter("pruneyolo_frames", "Frames whose detections were written", STREAM_LABELS,
                              registry=self.registry)
        self.detections = Counter("pruneyolo_detections", "Detections written, per class",
                                  (*STREAM_LABELS, "class"), registry=self.registry)
        self.latency = Histogram("pruneyolo_latency_seconds", "End to end: frame read -> its detections ready",
                                 STREAM_LABELS, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("pruneyolo_inference_seconds", "One mosaic's inference: submitted -> outputs "
                                   "delivered", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.captures = CaptureCollector()
        self.registry.register(self.captures)
        self.backend = BackendCollector()
        self.registry.register(self.backend)
        for stream, source in enumerate(sources):  # every stream's series exist from the first scrape
            self.frames.labels(str(stream), source_label(source))
            self.latency.labels(str(stream), source_label(source))

    def write(self, result) -> None:
        for frame in result.frames:
            labels = (str(frame.frame.stream), source_label(frame.source))
            self.frames.labels(*labels).inc()
            self.latency.labels(*labels).observe(frame.latency)
            for cls, count in collections.Counter(frame.detections.classes.tolist()).items():
                name = self.labels[cls] if cls < len(self.labels) else str(cls)
                self.detections.labels(*labels, name).inc(count)
        if result.frames:
            self.inference.observe(result.frames[0].infer)

    def follow(self, captures: list, server_stats=list) -> None:
        """Report these capture threads (a Pipeline's `captures`) and the adapter's `server_stats()`."""
        self.captures.captures = list(captures)
        self.backend.stats = server_stats

    def publish(self, snapshot: dict) -> None:
        self.captures.fps = {stream["stream"]: stream["fps"] for stream in snapshot["streams"]}

    def close(self) -> None:
        pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
