"""`--serve`: a small HTTP server (loopback by default) with the live annotated mosaic and the numbers.

Routes: `/` the viewer page, `/stream.mjpg` MJPEG (at most MAX_STREAM_CLIENTS at once), `/frame.jpg` the
latest mosaic, `/detections` the latest per-stream detections (JSON), `/metrics.json` the latest metrics
snapshot (JSON), `/metrics` the same for Prometheus. There is no authentication: requests must name this
server in their Host header (a web page that re-points its own domain at 127.0.0.1 cannot read the cameras),
and binding a non-loopback address logs a warning. No response is written while holding the lock that the
pipeline thread takes, so a slow client never slows inference.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import ipaddress
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from pruneyolo.errors import PruneyoloError
from pruneyolo.runner.outputs import frame_record
from pruneyolo.runner.prometheus import CONTENT_TYPE, PrometheusMetrics

BOUNDARY = "pruneyoloframe"
JPEG_QUALITY = 80
MAX_STREAM_CLIENTS = 8
KEEPALIVE_SECONDS = 5.0  # an idle MJPEG stream repeats its frame this often (and so notices gone clients)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARDS = {"0.0.0.0", "::"}

log = logging.getLogger(__name__)


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' or 'PORT' (loopback) -> (host, port)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise PruneyoloError(f"--serve {text!r} is not HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= number < 65536:
        raise PruneyoloError(f"--serve {text!r}: port out of range")
    return host.strip("[]") or "127.0.0.1", number


class LiveState:
    """A sink holding the latest view, detections and metrics for the server threads (guarded by a lock)."""

    needs_view = True

    def __init__(self, labels: list[str], streams: int):
        self.labels = labels
        self.changed = threading.Condition()
        self.views: dict[int, np.ndarray] = {}
        self.version = 0
        self.jpeg = (-1, b"")
        self.detections: list[dict | None] = [None] * streams
        self.metrics: dict = {}
        self.closed = False

    def write(self, result) -> None:
        records = {f.frame.stream: frame_record(f, self.labels) for f in result.frames}
        with self.changed:
            self.views[result.group] = result.view.copy()
            for stream, record in records.items():
                self.detections[stream] = record
            self.version += 1
            self.changed.notify_all()

    def publish(self, snapshot: dict) -> None:
        with self.changed:
            self.metrics = snapshot

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def latest_jpeg(self) -> tuple[int, bytes]:
        """The current view (groups stacked) as JPEG, encoded at most once per version."""
        with self.changed:
            if self.jpeg[0] == self.version:
                return self.jpeg
            views = [self.views[g] for g in sorted(self.views)]
            current = self.version
        if not views:
            return current, b""
        _, data = cv2.imencode(".jpg", np.vstack(views), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        with self.changed:
            self.jpeg = (current, data.tobytes())
            return self.jpeg

    def latest_detections(self) -> list[dict]:
        """The latest record of each stream that has one (taken under the lock, encoded by the caller)."""
        with self.changed:
            return [d for d in self.detections if d is not None]

    def latest_metrics(self) -> dict:
        """The latest published snapshot (never mutated after publishing)."""
        with self.changed:
            return self.metrics

    def wait_newer(self, version: int, timeout: float) -> bool:
        """Block until a view newer than `version` exists (True) or the run ends / times out (False)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.version > version or self.closed, timeout) and not self.closed


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses (names other than localhost count as exposed)."""
    return host.lower() == "localhost" or (is_ip_literal(host) and ipaddress.ip_address(host).is_loopback)


def host_name(header: str | None) -> str | None:
    """The name in a Host header, lower case, without port, brackets or trailing dot."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, _, port = header.rpartition(":")
    return (name if port.isdigit() else header).rstrip(".")


def host_allowed(header: str | None, bound: str) -> bool:
    """Whether a request's Host header names this server: localhost, the bound address, or for a wildcard
    bind any IP address or this machine's own name. DNS rebinding only ever brings a foreign name."""
    name = host_name(header)
    if name is None:
        return False
    if name in LOOPBACK_NAMES or name == bound.lower():
        return True
    return bound in WILDCARDS and (is_ip_literal(name) or name in {socket.gethostname().lower(),
                                                                    socket.getfqdn().lower()})


def viewer_page() -> bytes:
    return importlib.resources.files("pruneyolo.templates").joinpath("viewer.html").read_bytes()


def make_handler(state: LiveState, metrics: PrometheusMetrics, bound: str):
    """A request handler class bound to `state` and `metrics`, accepting Host headers that name `bound`."""
    stream_slots = threading.BoundedSemaphore(MAX_STREAM_CLIENTS)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, data) -> None:
            self._send(json.dumps(data).encode(), "application/json")

        def do_GET(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client went away
                self._route(self.path.split("?", 1)[0])

        def _route(self, path: str) -> None:
            if not host_allowed(self.headers.get("Host"), bound):
                self._send(f"Host {self.headers.get('Host')!r} is not this server; open it as "
                           f"http://127.0.0.1:{self.server.server_address[1]}/ or by its IP address\n".encode(),
                           "text/plain; charset=utf-8", 403)
            elif path in ("/", "/index.html"):
                self._send(viewer_page(), "text/html; charset=utf-8")
            elif path == "/frame.jpg":
                state.wait_newer(-1, 5.0)
                _, jpeg = state.latest_jpeg()
                if jpeg:
                    self._send(jpeg, "image/jpeg")
                else:
                    self._send(b"no frame yet", "text/plain", 503)
            elif path == "/stream.mjpg":
                if not stream_slots.acquire(blocking=False):
                    self._send(f"{MAX_STREAM_CLIENTS} live views are open already; close one, or poll "
                               f"/frame.jpg\n".encode(), "text/plain; charset=utf-8", 503)
                    return
                try:
                    self._stream()
                finally:
                    stream_slots.release()
            elif path == "/detections":
                self._json(state.latest_detections())
            elif path == "/metrics.json":
                self._json(state.latest_metrics())
            elif path == "/metrics":
                self._send(metrics.exposition(), CONTENT_TYPE)
            else:
                self._send(b"not found", "text/plain", 404)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            version = -1
            while not state.closed:
                state.wait_newer(version, KEEPALIVE_SECONDS)
                version, jpeg = state.latest_jpeg()
                if jpeg:
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")

    return Handler


class ViewerServer:
    """The HTTP server on its own daemon thread; `close()` shuts it down."""

    def __init__(self, address: str, state: LiveState, metrics: PrometheusMetrics):
        host, port = parse_address(address)
        try:
            self.server = ThreadingHTTPServer((host, port), make_handler(state, metrics, host))
        except OSError as exc:
            raise PruneyoloError(f"--serve {address}: cannot listen ({exc.strerror})") from None
        if not is_loopback(host):
            log.warning("--serve %s: reachable from the network with no authentication (anyone who can connect "
                        "sees the cameras); bind 127.0.0.1 and use an SSH tunnel or an authenticating proxy",
                        address)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="viewer", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
