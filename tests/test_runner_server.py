"""`--serve` with a plain HTTP client (no browser needed): the routes, the Host check against DNS rebinding,
the cap on MJPEG viewers, a stalled client never holding the lock the pipeline takes, the warning on a
non-loopback bind, and `/metrics` in the Prometheus format agreeing with the JSONL of the same run."""

import contextlib
import errno
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runner_support import make_ir

from pruneyolo.detect.boxes import Detections
from pruneyolo.detect.mosaic import Layout
from pruneyolo.runner import server as server_module
from pruneyolo.runner.adapter import Adapter
from pruneyolo.runner.outputs import JsonlSink, frame_record
from pruneyolo.runner.pipeline import FrameResult, MosaicResult, Pipeline
from pruneyolo.runner.prometheus import PrometheusMetrics, source_label
from pruneyolo.runner.server import MAX_STREAM_CLIENTS, LiveState, ServerLimits, ViewerServer, host_allowed
from pruneyolo.runner.sources import CapturePolicy, Frame, parse_source

LABELS = ["blue", "red"]
PRUNEYOLO = str(Path(sys.executable).with_name("pruneyolo"))
LIMIT = 60.0  # seconds any wait in these tests may take before it counts as a hang


def mosaic_result(index: int, streams: int = 2, boxes: int = 1) -> MosaicResult:
    """A MosaicResult of `streams` 64x48 frames numbered `index`, each with `boxes` class-1 boxes."""
    frames = []
    for stream in range(streams):
        image = np.full((48, 64, 3), 40 * stream, np.uint8)
        detections = Detections(np.tile(np.float32([[4, 5, 30, 40]]), (boxes, 1)), np.full(boxes, 0.9, np.float32),
                                np.ones(boxes, np.int64))
        frames.append(FrameResult(Frame(stream, index, image, 1.7e9 + index, 0.0, 0.001), f"cam{stream}",
                                  detections, 0.02, 0.01))
    return MosaicResult(0, frames, np.full((128, 128, 3), 10 * index % 250, np.uint8))


@pytest.fixture
def served():
    """A server on a free loopback port over a LiveState holding one mosaic and one snapshot."""
    state, metrics = LiveState(LABELS, 2), PrometheusMetrics(["cam0", "cam1"], LABELS)
    state.write(mosaic_result(0))
    state.publish({"frames": 2, "streams": [{"stream": 0, "source": "cam0", "fps": 1.0}]})
    server = ViewerServer("127.0.0.1:0", state, metrics)
    try:
        yield server, state
    finally:
        state.close()
        server.close()


def request(server: ViewerServer, path: str, host: str | None = "127.0.0.1") -> tuple[int, bytes]:
    """GET `path` with this Host header (None: no Host header at all); (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server.server_address[1], timeout=LIMIT)
    try:
        connection.putrequest("GET", path, skip_host=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_routes_serve_the_latest_state(served):
    server, _ = served
    status, page = request(server, "/")
    assert status == 200 and b"/metrics.json" in page and b"/stream.mjpg" in page
    status, body = request(server, "/detections")
    assert status == 200 and json.loads(body) == [frame_record(f, LABELS) for f in mosaic_result(0).frames]
    status, body = request(server, "/metrics.json")
    assert status == 200 and json.loads(body)["frames"] == 2
    status, body = request(server, "/frame.jpg")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and image.shape == (128, 128, 3)
    status, body = request(server, "/metrics")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert status == 200 and {"pruneyolo_frames", "pruneyolo_latency_seconds", "pruneyolo_stream_state"} <= names
    assert request(server, "/nothing")[0] == 404


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1", 200), ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LocalHost.", 200),
    ("[::1]:{port}", 200), ("attacker.example:{port}", 403), ("127.0.0.1.attacker.example", 403),
    ("localhost.attacker.example:{port}", 403), ("192.168.1.20:{port}", 403), (None, 403),
])
def test_host_header_must_name_this_server(served, host, status):
    server, _ = served
    port = server.server.server_address[1]
    for path in ("/", "/detections", "/metrics.json", "/metrics", "/frame.jpg"):
        got, body = request(server, path, None if host is None else host.format(port=port))
        assert got == status, (path, body)
    if status == 403:
        assert b"is not this server" in body and body.count(b"\n") == 1


def test_a_wildcard_bind_accepts_ip_addresses_and_this_machine_only():
    for host in ("192.168.1.20:8080", "10.0.0.7", "[fe80::1]:8080", socket.gethostname(), "localhost"):
        assert host_allowed(host, "0.0.0.0"), host
    for host in ("attacker.example", "attacker.example:8080", "", None):
        assert not host_allowed(host, "0.0.0.0"), host
    assert host_allowed("cams.lan:8080", "cams.lan") and not host_allowed("cams.lan", "10.0.0.7")


def open_stream(server: ViewerServer) -> tuple[socket.socket, bytes]:
    """Start a GET /stream.mjpg; the socket and the response's status line."""
    sock = socket.create_connection(("127.0.0.1", server.server.server_address[1]), timeout=LIMIT)
    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n" not in head:
        head += sock.recv(1)
    return sock, head.strip()


def test_mjpeg_viewers_are_capped_and_a_closed_one_frees_its_place(served):
    server, state = served
    viewers = [open_stream(server) for _ in range(MAX_STREAM_CLIENTS)]
    assert all(status == b"HTTP/1.0 200 OK" for _, status in viewers)
    extra = http.client.HTTPConnection("127.0.0.1", server.server.server_address[1], timeout=LIMIT)
    extra.request("GET", "/stream.mjpg")
    refused = extra.getresponse()
    assert refused.status == 503 and f"{MAX_STREAM_CLIENTS} live views".encode() in refused.read()
    viewers.pop()[0].close()
    deadline, index, status = time.monotonic() + LIMIT, 1, b""
    while status != b"HTTP/1.0 200 OK" and time.monotonic() < deadline:
        state.write(mosaic_result(index))  # writing to the closed viewer's socket fails and ends it
        index += 1
        sock, status = open_stream(server)
        if status != b"HTTP/1.0 200 OK":
            sock.close()
            time.sleep(0.05)
    assert status == b"HTTP/1.0 200 OK"
    viewers.append((sock, status))
    for sock, _ in viewers:
        sock.close()


@pytest.mark.parametrize("route", ["/metrics.json", "/detections"])
def test_a_stalled_client_never_blocks_the_pipeline(served, route):
    server, state = served
    huge = "x" * 2**25  # far more than the socket buffers hold, so sending it blocks until the client reads
    if route == "/metrics.json":
        state.publish({"pad": huge})
    else:
        state.detections[0] = {"stream": 0, "pad": huge}
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", server.server.server_address[1]))
    client.sendall(f"GET {route} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    time.sleep(1.0)  # the handler is now blocked writing to a client that reads nothing
    done = threading.Event()

    def pipeline_side():
        state.write(mosaic_result(1))
        state.publish({"frames": 4})
        done.set()

    threading.Thread(target=pipeline_side, daemon=True).start()
    blocked = not done.wait(5.0)
    head = client.recv(4096)
    client.close()  # the handler's next write fails, which ends it quietly
    assert not blocked, "the pipeline waited for a stalled HTTP client"
    assert head.startswith(b"HTTP/1.0 200")


def test_binding_a_non_loopback_address_warns_once(caplog):
    state, metrics = LiveState(LABELS, 1), PrometheusMetrics(["cam0"], LABELS)
    for address, warned in (("127.0.0.1:0", False), ("localhost:0", False), ("0.0.0.0:0", True)):
        caplog.clear()
        server = ViewerServer(address, state, metrics)
        server.close()
        lines = [r.getMessage() for r in caplog.records if r.name == server_module.__name__]
        assert len(lines) == (1 if warned else 0), lines
        assert all("\n" not in line and "no authentication" in line and address in line for line in lines)


def test_source_labels_hide_url_passwords():
    assert source_label("rtsp://admin:s3cret@10.0.0.7:554/stream1") == "rtsp://admin:***@10.0.0.7:554/stream1"
    assert source_label("rtsp://10.0.0.7/live") == "rtsp://10.0.0.7/live"
    assert source_label("synthetic:seed=1,size=96x72") == "synthetic:seed=1,size=96x72"


def families(text: str) -> dict[str, dict[tuple, float]]:
    """Parsed exposition: family name -> {(sample name, sorted label items): value}."""
    return {family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
            for family in text_string_to_metric_families(text)}


def value(parsed: dict, family: str, sample: str, **labels) -> float:
    return parsed[family][(sample, tuple(sorted(labels.items())))]


def test_prometheus_metrics_scraped_during_a_run_agree_with_the_jsonl(tmp_path):
    xml = make_ir(tmp_path / "tiny.xml", 128, 128, stride=16)
    sources = ["synthetic:seed=1,size=96x72,fps=60", "synthetic:seed=2,size=72x96,fps=60",
               "synthetic:seed=3,size=64x64,objects=8,fps=60"]
    jsonl = tmp_path / "d.jsonl"
    state, metrics = LiveState(LABELS, 3), PrometheusMetrics(sources, LABELS)
    server = ViewerServer("127.0.0.1:0", state, metrics)
    scrapes, outcome = [], {}
    with Adapter(xml, nireq=2) as adapter:
        pipeline = Pipeline(adapter, [parse_source(s) for s in sources], CapturePolicy(max_frames=90),
                            Layout(2, 2, 128, 128), [JsonlSink(str(jsonl), LABELS), state, metrics],
                            listeners=[state.publish, metrics.publish])
        metrics.follow(pipeline.captures)
        runner = threading.Thread(target=lambda: outcome.update(report=pipeline.run(threading.Event())))
        runner.start()
        while runner.is_alive() and len(scrapes) < 3:  # scrape while frames flow
            time.sleep(0.3)
            text = request(server, "/metrics")[1].decode()
            if runner.is_alive() and value(families(text), "pruneyolo_frames", "pruneyolo_frames_total",
                                           stream="0", source=sources[0]) > 0:
                scrapes.append(families(text))
        runner.join(LIMIT)
        assert not runner.is_alive(), "the run did not end"
        final = families(request(server, "/metrics")[1].decode())
    server.close()
    assert scrapes, "no scrape happened while the run was going"
    report = outcome["report"]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for index, source in enumerate(sources):
        labels = {"stream": str(index), "source": source}
        mine = [r for r in records if r["stream"] == index]
        stats = report["streams"][index]
        assert value(final, "pruneyolo_frames", "pruneyolo_frames_total", **labels) == len(mine) == stats["frames"]
        for scrape in scrapes:  # mid-run: written so far <= in the JSONL at the end, and <= read so far
            written = value(scrape, "pruneyolo_frames", "pruneyolo_frames_total", **labels)
            assert written <= len(mine) and written <= value(scrape, "pruneyolo_frames_read",
                                                             "pruneyolo_frames_read_total", **labels)
        for label in LABELS:
            found = sum(d["label"] == label for r in mine for d in r["detections"])
            key = ("pruneyolo_detections_total", tuple(sorted({**labels, "class": label}.items())))
            assert final["pruneyolo_detections"].get(key, 0) == found
        assert value(final, "pruneyolo_latency_seconds", "pruneyolo_latency_seconds_count", **labels) == len(mine)
        assert value(final, "pruneyolo_latency_seconds", "pruneyolo_latency_seconds_bucket", **labels,
                     le="+Inf") == len(mine)
        latency = value(final, "pruneyolo_latency_seconds", "pruneyolo_latency_seconds_sum", **labels)
        assert latency == pytest.approx(sum(r["latency_ms"] for r in mine) / 1000, abs=1e-4)
        assert value(final, "pruneyolo_frames_read", "pruneyolo_frames_read_total", **labels) == stats["read"] == 90
        assert value(final, "pruneyolo_frames_dropped", "pruneyolo_frames_dropped_total", **labels) == \
            stats["dropped"] == 90 - len(mine)
        assert value(final, "pruneyolo_reconnects", "pruneyolo_reconnects_total", **labels) == 0
        assert value(final, "pruneyolo_stream_state", "pruneyolo_stream_state", **labels, state="ended") == 1
        assert value(final, "pruneyolo_stream_state", "pruneyolo_stream_state", **labels, state="live") == 0
        assert value(final, "pruneyolo_stream_fps", "pruneyolo_stream_fps", **labels) == stats["fps"]
        assert any(value(s, "pruneyolo_stream_state", "pruneyolo_stream_state", **labels, state="live") == 1
                   for s in scrapes)
    assert value(final, "pruneyolo_inference_seconds", "pruneyolo_inference_seconds_count") == report["mosaics"]
    assert sum(len(r["detections"]) for r in records) > 0


def test_pruneyolo_run_serves_prometheus_metrics(tmp_path):
    xml = make_ir(tmp_path / "tiny.xml", 128, 128, stride=16)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    jsonl = tmp_path / "d.jsonl"
    sources = [a for i in range(2) for a in ("--source", f"synthetic:seed={i},size=96x72,fps=30")]
    process = subprocess.Popen([PRUNEYOLO, "run", str(xml), *sources, "--max-frames", "120", "--jsonl", str(jsonl),
                                "--serve", f"127.0.0.1:{port}", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    scraped = None
    try:
        deadline = time.monotonic() + LIMIT
        while scraped is None and time.monotonic() < deadline and process.poll() is None:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/metrics")
                response = connection.getresponse()
                parsed = families(response.read().decode())
                connection.close()
                if value(parsed, "pruneyolo_frames", "pruneyolo_frames_total", stream="1", source=sources[3]) > 0:
                    scraped = (response.status, response.getheader("Content-Type"), parsed)
            except OSError:
                pass
            time.sleep(0.2)
        _, err = process.communicate(timeout=LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert scraped is not None, "never scraped /metrics during the run"
    status, content_type, parsed = scraped
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for stream in (0, 1):
        labels = {"stream": str(stream), "source": sources[2 * stream + 1]}
        count = value(parsed, "pruneyolo_frames", "pruneyolo_frames_total", **labels)
        assert 0 < count <= sum(r["stream"] == stream for r in records)
        assert value(parsed, "pruneyolo_latency_seconds", "pruneyolo_latency_seconds_count", **labels) == count


# --- hostile clients ---------------------------------------------------------------------------------------

@pytest.fixture
def limited():
    """A server factory with the given ServerLimits over one mosaic; all closed at the end."""
    opened = []

    def start(**limits) -> tuple[ViewerServer, LiveState]:
        state = LiveState(LABELS, 2)
        state.write(mosaic_result(0))
        server = ViewerServer("127.0.0.1:0", state, PrometheusMetrics(["cam0", "cam1"], LABELS),
                              ServerLimits(**limits))
        opened.append((server, state))
        return server, state

    yield start
    for server, state in opened:
        state.close()
        server.close()


def connect(server: ViewerServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.server.server_address[1]), timeout=LIMIT)


def seconds_until_closed(sock: socket.socket, trickle: bytes = b"") -> float:
    """Send `trickle` a byte every 0.2 s (none if empty) and read until the server closes; seconds taken."""
    started = time.monotonic()
    sock.settimeout(0.2)
    for byte in trickle or b"\0" * 10**6:
        with contextlib.suppress(TimeoutError):
            if sock.recv(1024) == b"":
                break
        if trickle:
            with contextlib.suppress(OSError):
                sock.send(bytes([byte]))
        if time.monotonic() - started > LIMIT:
            break
    sock.close()
    return time.monotonic() - started


def test_idle_and_trickling_requests_are_closed_at_the_request_deadline(limited):
    server, _ = limited(request_seconds=1.0)
    assert seconds_until_closed(connect(server)) < 3.0  # connected, sent nothing
    trickled = seconds_until_closed(connect(server), b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200)
    assert trickled < 3.0  # a byte every 0.2 s: each read is quick, the request as a whole is not
    assert request(server, "/detections")[0] == 200  # a real client is served


def test_at_the_connection_cap_idle_connections_make_room_for_real_requests(limited, capfd):
    server, _ = limited(max_connections=4, request_seconds=LIMIT)
    threads = threading.active_count()
    idle = [connect(server) for _ in range(12)]
    for sock in idle[::2]:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0")  # half a request: closed mid-headers
    started = time.monotonic()
    assert request(server, "/detections")[0] == 200
    assert time.monotonic() - started < 2.0
    time.sleep(0.5)
    assert threading.active_count() - threads <= 4  # one thread per admitted connection, never 13
    closed = 0
    for sock in idle:
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            closed += sock.recv(1) == b""
        sock.close()
    assert closed >= 12 - 4  # the longest-waiting ones were closed to make room
    assert "Traceback" not in capfd.readouterr().err  # closed clients are no error worth printing


def test_at_the_cap_with_every_connection_answered_a_new_one_gets_503(limited):
    server, state = limited(max_connections=2)
    viewers = [open_stream(server) for _ in range(2)]
    assert all(status == b"HTTP/1.0 200 OK" for _, status in viewers)
    refused = connect(server)
    answer = refused.recv(4096)
    assert answer.startswith(b"HTTP/1.0 503") and b"too many connections" in answer
    assert refused.recv(4096) == b""  # and closed at once
    for sock, _ in viewers:
        sock.close()
    deadline, index = time.monotonic() + LIMIT, 1
    while time.monotonic() < deadline:
        state.write(mosaic_result(index))  # the closed viewers' next writes fail and end them
        index += 1
        with contextlib.suppress(ConnectionResetError, http.client.RemoteDisconnected):
            if request(server, "/detections")[0] == 200:
                break
        time.sleep(0.05)
    assert time.monotonic() < deadline


class FailingAccept:
    """The listening socket, except that accept() fails (no file descriptor left) while `failing` is set."""

    def __init__(self, sock: socket.socket):
        self.sock, self.failing, self.calls = sock, True, 0

    def accept(self):
        self.calls += 1
        if self.failing:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock.accept()

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_a_failing_accept_backs_off_instead_of_spinning(limited):
    server, _ = limited(accept_backoff=(0.05, 0.4))
    listening = FailingAccept(server.server.socket)
    server.server.socket = listening
    pending = connect(server)  # the listening socket stays readable: without back-off, a busy loop
    time.sleep(2.0)
    assert 2 <= listening.calls <= 12, listening.calls  # 0.05, 0.1, 0.2, then every 0.4 s
    listening.failing = False
    pending.sendall(b"GET /detections HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    pending.settimeout(LIMIT)
    assert pending.recv(64).startswith(b"HTTP/1.0 200")
    pending.close()
    server.server.socket = listening.sock


def noisy_result(index: int) -> MosaicResult:
    """A mosaic whose view is noise: large JPEGs, which fill a stalled viewer's buffers in a few frames."""
    result = mosaic_result(index)
    view = np.random.default_rng(index).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return MosaicResult(result.group, result.frames, view)


def test_viewers_that_stop_reading_are_dropped_after_the_write_timeout(limited):
    server, state = limited(write_seconds=1.0)
    stalled = []
    for _ in range(MAX_STREAM_CLIENTS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.server.server_address[1]))
        sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stalled.append(sock)  # and never read
    time.sleep(0.5)
    started, index, status = time.monotonic(), 1, b""
    while status != b"HTTP/1.0 200 OK" and time.monotonic() - started < 30:
        state.write(noisy_result(index))
        index += 1
        sock, status = open_stream(server)
        sock.close()
        time.sleep(0.1)
    assert status == b"HTTP/1.0 200 OK", "the stalled viewers still hold every slot"
    assert time.monotonic() - started < 15
    for sock in stalled:
        sock.close()
