"""`--serve`: a small HTTP server (loopback by default) with the live annotated mosaic and the numbers.

Routes: `/` the viewer page, `/stream.mjpg` MJPEG, `/frame.jpg` the latest mosaic, `/detections` the
latest per-stream detections (JSON), `/metrics` the latest metrics snapshot (JSON).
"""

from __future__ import annotations

import importlib.resources
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from pruneyolo.errors import PruneyoloError
from pruneyolo.runner.outputs import frame_record

BOUNDARY = "pruneyoloframe"
JPEG_QUALITY = 80


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

    def wait_newer(self, version: int, timeout: float) -> bool:
        """Block until a view newer than `version` exists (True) or the run ends / times out (False)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.version > version or self.closed, timeout) and not self.closed


def viewer_page() -> bytes:
    return importlib.resources.files("pruneyolo.templates").joinpath("viewer.html").read_bytes()


def make_handler(state: LiveState):
    """A request handler class bound to `state`."""

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
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(viewer_page(), "text/html; charset=utf-8")
            elif path == "/frame.jpg":
                state.wait_newer(-1, 5.0)
                _, jpeg = state.latest_jpeg()
                if jpeg:
                    self._send(jpeg, "image/jpeg")
                else:
                    self._send(b"no frame yet", "text/plain", 503)
            elif path == "/stream.mjpg":
                self._stream()
            elif path == "/detections":
                with state.changed:
                    self._json([d for d in state.detections if d is not None])
            elif path == "/metrics":
                with state.changed:
                    self._json(state.metrics)
            else:
                self._send(b"not found", "text/plain", 404)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            version = -1
            try:
                while state.wait_newer(version, 5.0):
                    version, jpeg = state.latest_jpeg()
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


class ViewerServer:
    """The HTTP server on its own daemon thread; `close()` shuts it down."""

    def __init__(self, address: str, state: LiveState):
        host, port = parse_address(address)
        try:
            self.server = ThreadingHTTPServer((host, port), make_handler(state))
        except OSError as exc:
            raise PruneyoloError(f"--serve {address}: cannot listen ({exc.strerror})") from None
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
