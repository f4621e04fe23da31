"""`--serve`: a small HTTP server (loopback by default) with the live annotated mosaic and the numbers.

Routes: `/` the viewer page, `/stream.mjpg` MJPEG (at most MAX_STREAM_CLIENTS at once), `/frame.jpg` the
latest mosaic, `/detections` the latest per-stream detections (JSON), `/metrics.json` the latest metrics
snapshot (JSON), `/metrics` the same for Prometheus. There is no authentication: requests must name this
server in their Host header (a web page that re-points its own domain at 127.0.0.1 cannot read the cameras),
and binding a non-loopback address logs a warning. No response is written while holding the lock that the
pipeline thread takes, so a slow client never slows inference.

Hostile or broken clients cost little (limits in ServerLimits): a request (line and headers) must arrive within
`request_seconds` or its connection is closed; at most `max_connections` are open, and at the cap a new one
takes the place of the one that has waited longest without sending its request, or, if every connection is
being answered, gets a 503 and is closed at once; a failing accept() (out of file descriptors) backs off
instead of spinning; and a response or MJPEG viewer that accepts no data for `write_seconds` is dropped.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from pruneyolo.errors import ArgumentError
from pruneyolo.runner.outputs import frame_record
from pruneyolo.runner.prometheus import CONTENT_TYPE, PrometheusMetrics

BOUNDARY = "pruneyoloframe"
JPEG_QUALITY = 80
MAX_STREAM_CLIENTS = 8
KEEPALIVE_SECONDS = 5.0  # an idle MJPEG stream repeats its frame this often (and so notices gone clients)
STREAM_SEND_BUFFER = 1 << 16  # bytes the kernel queues for one viewer, so a stalled one blocks soon
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARDS = {"0.0.0.0", "::"}

log = logging.getLogger(__name__)


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' or 'PORT' (loopback) -> (host, port)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ArgumentError("serve", f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= number < 65536:
        raise ArgumentError("serve", f"{text!r}: port out of range")
    return host.strip("[]") or "127.0.0.1", number


@dataclass(frozen=True)
class ServerLimits:
    """What one client may cost: time to send a request, time a write may block, open connections, and the
    back-off after a failed accept()."""

    request_seconds: float = 10.0
    write_seconds: float = 10.0
    max_connections: int = 64
    accept_backoff: tuple[float, float] = (0.05, 1.0)  # first and longest pause after accept() fails


BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        b"too many connections; try again in a few seconds\n")


class DeadlineReader(socket.SocketIO):
    """The reading side of a connection: every read must end before one deadline for the whole request, so
    neither an idle client nor one sending a byte at a time holds a thread for longer."""

    def __init__(self, sock: socket.socket, seconds: float):
        super().__init__(sock, "rb")
        self.deadline = time.monotonic() + seconds

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        return super().readinto(buffer)


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

        def setup(self) -> None:
            super().setup()
            self.rfile.close()
            self.rfile = io.BufferedReader(DeadlineReader(self.connection, self.server.limits.request_seconds))

        def parse_request(self) -> bool:
            """Once the request is in: writes may block for write_seconds, and the connection is being
            answered (no longer one a new connection may take the place of)."""
            parsed = super().parse_request()
            if parsed:
                self.connection.settimeout(self.server.limits.write_seconds)
                self.server.answering(self.connection)
            return parsed

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
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):  # gone or stalled
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
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
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


class LimitedServer(ThreadingHTTPServer):
    """A thread per connection, with the connection cap and the accept() back-off of ServerLimits."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler, limits: ServerLimits):
        self.limits = limits
        self.waiting: dict[socket.socket, float] = {}  # connection -> when it opened, until its request is in
        self.answered: set[socket.socket] = set()
        self.guard = threading.Lock()
        self.pause = 0.0
        super().__init__(address, handler)

    def get_request(self):
        """accept(); after a failure (no file descriptor left) pause, doubling up to the limit, so that the
        loop does not spin on a listening socket that stays readable."""
        try:
            request = super().get_request()
        except OSError:
            first, longest = self.limits.accept_backoff
            self.pause = min(longest, max(first, 2 * self.pause))
            time.sleep(self.pause)
            raise
        self.pause = 0.0
        return request

    def verify_request(self, request, client_address) -> bool:
        """Admit below the cap; at it, take the place of the longest-waiting request, or refuse with 503."""
        with self.guard:
            if len(self.waiting) + len(self.answered) >= self.limits.max_connections:
                if not self.waiting:
                    _refuse(request)
                    return False
                oldest = min(self.waiting, key=self.waiting.get)
                del self.waiting[oldest]
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)  # its handler's read ends, and so does its thread
            self.waiting[request] = time.monotonic()
        return True

    def answering(self, request: socket.socket) -> None:
        with self.guard:
            if self.waiting.pop(request, None) is not None:
                self.answered.add(request)

    def handle_error(self, request, client_address) -> None:
        """A client that broke off or was closed mid-request: logged at debug level, not printed to stderr."""
        log.debug("client %s: %s", client_address[0], sys.exc_info()[1])

    def shutdown_request(self, request) -> None:
        with self.guard:
            self.waiting.pop(request, None)
            self.answered.discard(request)
        super().shutdown_request(request)


def _refuse(request: socket.socket) -> None:
    """A short 503 on a connection over the cap, without waiting for the client."""
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(BUSY)


class ViewerServer:
    """The HTTP server on its own daemon thread; `close()` shuts it down."""

    def __init__(self, address: str, state: LiveState, metrics: PrometheusMetrics,
                 limits: ServerLimits = ServerLimits()):
        host, port = parse_address(address)
        try:
            self.server = LimitedServer((host, port), make_handler(state, metrics, host), limits)
        except OSError as exc:
            raise ArgumentError("serve", f"{address}: cannot listen ({exc.strerror})") from None
        if not is_loopback(host):
            log.warning("--serve %s: reachable from the network with no authentication (anyone who can connect "
                        "sees the cameras); bind 127.0.0.1 and use an SSH tunnel or an authenticating proxy",
                        address)
        self.thread = threading.Thread(target=self.server.serve_forever, name="viewer", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
