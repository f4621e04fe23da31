"""The runner's inference on model servers: mosaics sent over gRPC to KServe v2 servers (OpenVINO Model Server,
Triton, KServe) through tritonclient: the `kserve://` backend (runner/backend.py's interface).

`kserve://HOST:PORT[,HOST:PORT...]/NAME`: before the run each server must be ready and serve NAME with the
local IR's input and outputs (read from the .xml alone). Each mosaic goes to the server with the fewest requests
outstanding, at most `inflight` each. A call that fails or times out marks its server down (probed again with
back-off, 0.5 s doubling to 8 s) and its mosaic goes to another server, or waits until one is back: a mosaic is
on one server at a time, so none is lost or delivered twice. Once no call has succeeded for `retry_window`
seconds since one failed, the run gives up: the mosaics not inferred are handed over with outputs None (their
frames are skipped), and every later `submit` or `wait` raises one line naming each server's last error.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pruneyolo.detect.interface import TensorSpec, read_interface
from pruneyolo.errors import ArgumentError, PruneyoloError
from pruneyolo.runner.backend import KSERVE_INFLIGHT

log = logging.getLogger(__name__)

SCHEME = "kserve://"
BACKOFF_START, BACKOFF_MAX = 0.5, 8.0  # seconds before probing a failed server again, doubling
MONITOR_EVERY = 0.05  # seconds between the monitor's looks at down servers and waiting mosaics
RECENT = 256  # latencies kept per server for the median


@dataclass(frozen=True)
class BackendSpec:
    """A parsed `--backend`: server addresses (HOST:PORT) and the served model's name."""

    text: str
    addresses: tuple[str, ...]
    model: str


@dataclass(frozen=True)
class BackendOptions:
    """Requests in flight per server, the timeout of every call and the retry window (seconds), TLS, token."""

    inflight: int = KSERVE_INFLIGHT
    timeout: float = 10.0
    retry_window: float = 30.0
    tls: bool = False
    ca_file: str | None = None
    token: str | None = None


class Unreachable(Exception):
    """A server that did not answer, or not yet: retried, unlike a PruneyoloError (a server serving another
    model, or refusing our credentials)."""


def parse_backend(text: str) -> BackendSpec:
    """`kserve://HOST:PORT[,HOST:PORT...]/NAME` -> BackendSpec, or one line saying what is wrong."""
    usage = "expected kserve://HOST:PORT[,HOST:PORT...]/MODEL_NAME"
    if not text.startswith(SCHEME):
        raise ArgumentError("backend", f"{text!r}: {usage}")
    hosts, _, model = text[len(SCHEME):].partition("/")
    if not model or "/" in model:
        raise ArgumentError("backend", f"{text!r}: no model name after the servers; {usage}")
    addresses = tuple(address.strip() for address in hosts.split(","))
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ArgumentError("backend", f"{text!r}: {address!r} is not HOST:PORT; {usage}")
    if len(set(addresses)) < len(addresses):
        raise ArgumentError("backend", f"{text!r}: a server is named twice")
    return BackendSpec(text, addresses, model)


def read_token(path: str | Path) -> str:
    """A bearer token file's text (surrounding whitespace dropped), which must not be empty."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArgumentError("backend_token_file", f"{path}: cannot read it ({exc})") from None
    if not token or any(c.isspace() for c in token):
        raise ArgumentError("backend_token_file", f"{path}: expected one token (no spaces), got "
                                                  f"{'nothing' if not token else 'several words'}")
    return token


def open_kserve(xml, address: str, nireq: int | None = None, backend_token_file=None, backend_tls: bool = False,
                backend_ca=None, backend_timeout: float = 10.0, backend_retry: float = 30.0) -> RemoteAdapter:
    """The `kserve://` backend: `nireq` requests in flight per server, TLS (`backend_ca` implies it), a bearer
    token read from `backend_token_file`, each call's timeout and the retry window in seconds."""
    token = read_token(backend_token_file) if backend_token_file else None
    options = BackendOptions(nireq or KSERVE_INFLIGHT, backend_timeout, backend_retry,
                             backend_tls or bool(backend_ca), backend_ca, token)
    return RemoteAdapter(xml, address, options)


def error_text(exc: BaseException) -> str:
    """A client error as one short line: gRPC status and message, whitespace collapsed."""
    status = exc.status() if callable(getattr(exc, "status", None)) else None
    message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    text = re.sub(r"\s+", " ", f"{status.replace('StatusCode.', '')}: {message}" if status else str(message))
    return text.strip()[:200]


def grpc_client_module():
    """tritonclient.grpc, or one line saying how to install it."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise ArgumentError("backend", "needs tritonclient's gRPC client: pip install 'pruneyolo[remote]' "
                             "(or 'tritonclient[grpc]')") from None
    return grpcclient


def shape_text(shape) -> str:
    return f"[{', '.join(str(int(d)) for d in shape)}]"


def served_text(tensors) -> str:
    return ", ".join(f"{t.name} {t.datatype} {shape_text(t.shape)}" for t in tensors) or "nothing"


def same_shape(served, local: tuple[int, ...]) -> bool:
    """Equal shapes, a served -1 (dynamic) matching any size."""
    return len(served) == len(local) and all(int(s) in (-1, d) for s, d in zip(served, local, strict=True))


def match_metadata(metadata, image: TensorSpec, outputs: tuple[TensorSpec, ...], where: str,
                   xml: str) -> tuple[str, ...]:
    """The served names of the IR's outputs, in the IR's order, once the served model's metadata (a
    ModelMetadataResponse) is checked to take the IR's input and give its outputs; else one line."""
    served = list(metadata.inputs)
    if (len(served) != 1 or served[0].name not in image.names or served[0].datatype != image.datatype
            or not same_shape(served[0].shape, image.shape)):
        raise PruneyoloError(f"{where} takes {served_text(served)}, but {xml} takes {image.describe()}: serve "
                             f"this IR there (`pruneyolo convert --ovms`) or run the served model's .xml")
    names = []
    for spec in outputs:
        found = next((t for t in metadata.outputs if t.name in spec.names), None)
        if found is None or found.datatype != spec.datatype or not same_shape(found.shape, spec.shape):
            raise PruneyoloError(f"{where} gives {served_text(metadata.outputs)}, but {xml} gives "
                                 f"{', '.join(t.describe() for t in outputs)}: serve this IR there "
                                 "(`pruneyolo convert --ovms`) or run the served model's .xml")
        names.append(found.name)
    return tuple(names)


@dataclass
class Server:
    """One server: its client, whether it takes requests, what it has outstanding, and its counters."""

    address: str
    client: object
    up: bool = False
    outstanding: int = 0
    sent: int = 0
    answered: int = 0
    errors: int = 0
    latency_total: float = 0.0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT))
    last_error: str = ""
    backoff: float = BACKOFF_START
    retry_at: float = 0.0
    output_names: tuple[str, ...] = ()

    def record(self, seconds: float) -> None:
        self.answered += 1
        self.latency_total += seconds
        self.recent.append(seconds)
        self.backoff = BACKOFF_START

    def stats(self) -> dict:
        """The server's counters, JSON-ready (latencies in ms: mean over the run, median of the last RECENT)."""
        return {"server": self.address, "state": "up" if self.up else "down", "outstanding": self.outstanding,
                "requests": self.answered, "errors": self.errors, "latency_total_s": round(self.latency_total, 6),
                "latency_ms": round(1000 * self.latency_total / max(self.answered, 1), 3),
                "median_ms": round(1000 * float(np.median(self.recent)), 3) if self.recent else 0.0,
                "last_error": self.last_error}


@dataclass(eq=False)
class Job:
    """One submitted mosaic: its userdata, its request input (kept for resubmission), outputs once done."""

    seq: int
    userdata: object
    inputs: list | None
    submitted: float
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[np.ndarray] | None = None


class RemoteAdapter:
    """The served model behind `spec` (checked against the local IR), with results to `on_result` in order."""

    def __init__(self, xml: str | Path, backend: str, options: BackendOptions = BackendOptions()):
        self.spec, self.options, self.xml = parse_backend(backend), options, str(xml)
        self.grpc = grpc_client_module()
        interface = read_interface(xml)
        self.info, self.output_specs = interface.info, interface.outputs
        image = interface.inputs[0] if len(interface.inputs) == 1 else None
        if image is None or len(image.shape) != 4 or image.shape[0] != 1 or image.shape[3] != 3:
            raise PruneyoloError(f"{xml}: expected one [1, H, W, 3] u8 BGR input, got "
                                 f"{', '.join(t.describe() for t in interface.inputs) or 'none'}")
        self.image = image
        self.input_size = image.shape[2], image.shape[1]  # (width, height)
        self.outputs = len(self.output_specs)
        self.headers = {"authorization": f"Bearer {options.token}"} if options.token else None
        self.requests = options.inflight * len(self.spec.addresses)
        self.precision_used = "set by the server"
        self.where = backend
        self.on_result: Callable[[object, list[np.ndarray] | None, float], None] = lambda *_: None
        self.keep: Callable[[list[np.ndarray]], list[np.ndarray]] = lambda outputs: outputs  # already copies
        self.lock = threading.Condition()
        self.servers = [Server(address, self._client(address)) for address in self.spec.addresses]
        self.unfinished: dict[int, Job] = {}
        self.parked: list[Job] = []
        self.submitted = self.waiting = 0
        self.troubled_since: float | None = None
        self.error: BaseException | None = None
        self.fatal: PruneyoloError | None = None
        try:
            self._connect()
        except BaseException:
            self._close_clients()
            raise
        self.in_order: queue.Queue[Job | None] = queue.Queue()
        self.closing = threading.Event()
        self.results = threading.Thread(target=self._deliver, name="remote-results", daemon=True)
        self.monitor = threading.Thread(target=self._watch, name="remote-monitor", daemon=True)
        self.results.start()
        self.monitor.start()

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _client(self, address: str):
        """A gRPC client for one server (TLS if asked for; tritonclient reads the CA file itself)."""
        return self.grpc.InferenceServerClient(address, ssl=self.options.tls or bool(self.options.ca_file),
                                               root_certificates=self.options.ca_file)

    def _where(self, server: Server) -> str:
        return f"kserve://{server.address}/{self.spec.model}"

    def _check(self, server: Server) -> tuple[str, ...]:
        """ServerReady, ModelReady and the model's metadata vs the local IR -> the served output names.
        Raises Unreachable (no answer, not ready) or PruneyoloError (another model, credentials refused)."""
        calls = {"headers": self.headers, "client_timeout": self.options.timeout}
        where, client = self._where(server), server.client
        try:
            if not client.is_server_ready(**calls):
                raise Unreachable("ServerReady: not ready")
            if not client.is_model_ready(self.spec.model, **calls):
                raise Unreachable(f"ModelReady: model {self.spec.model!r} not ready")
            metadata = client.get_model_metadata(self.spec.model, **calls)
        except self.grpc.InferenceServerException as exc:
            status = str(exc.status())
            if "NOT_FOUND" in status:
                raise PruneyoloError(f"{where}: the server has no model {self.spec.model!r} ({error_text(exc)}); "
                                     "give the name it serves (OVMS: config.json model_config_list[].config.name)"
                                     ) from None
            if "UNAUTHENTICATED" in status or "PERMISSION_DENIED" in status:
                raise ArgumentError("backend", f"{where}: credentials refused ({error_text(exc)}); check "
                                               "{backend_token_file}", ("backend_token_file",)) from None
            raise Unreachable(error_text(exc)) from None
        return match_metadata(metadata, self.image, self.output_specs, where, self.xml)

    def _connect(self) -> None:
        """Check every server before the run: a mismatch is an error; so is no server answering, while a
        server that does not answer when another does is left to the monitor's retries."""
        for server in self.servers:
            try:
                server.output_names = self._check(server)
                server.up = True
            except Unreachable as exc:
                server.last_error = str(exc)
                server.retry_at = time.monotonic() + server.backoff
        if not any(server.up for server in self.servers):
            detail = "; ".join(f"{s.address}: {s.last_error}" for s in self.servers)
            raise ArgumentError("backend", f"{self.spec.text}: no server ready, each asked with a "
                                           f"{self.options.timeout:g} s timeout ({detail}); start the model server "
                                           "or fix the address")
        for server in self.servers:
            if not server.up:
                log.warning("%s did not answer (%s); the run starts without it and retries it",
                            self._where(server), server.last_error)

    def close(self) -> None:
        """Deliver every result in flight, end the result and monitor threads, close the clients."""
        if self.results is None:
            return
        self.in_order.put(None)
        self.results.join()
        self.closing.set()
        self.monitor.join()
        self.results = None
        self._close_clients()

    def _close_clients(self) -> None:
        for server in self.servers:
            server.client.close()

    @staticmethod
    def shared_tensor(image: np.ndarray) -> np.ndarray:
        """The mosaic buffer itself: `submit` serialises it at once."""
        return image

    def submit(self, image: np.ndarray, userdata) -> None:
        """Send a HxWx3 u8 image to the least busy server (blocks while every server has `inflight` requests
        outstanding, or none is up)."""
        self.raise_pending()
        tensor = self.grpc.InferInput(self.image.name, list(self.image.shape), self.image.datatype)
        tensor.set_data_from_numpy(image[None])
        with self.lock:
            job = Job(self.submitted, userdata, [tensor], time.perf_counter())
            self.waiting += 1
            try:
                while (server := self._least_busy(capacity=True)) is None:
                    if self.fatal:
                        raise self.fatal
                    self.lock.wait(MONITOR_EVERY)
            finally:
                self.waiting -= 1
            self.submitted += 1
            self.unfinished[job.seq] = job
            self.in_order.put(job)
            self._send(job, server)

    def wait(self) -> None:
        """Wait until every submitted result is delivered, then re-raise any error kept meanwhile."""
        self.in_order.join()
        self.raise_pending()

    def raise_pending(self) -> None:
        with self.lock:
            error, self.error = self.error, None
        if error is not None:
            raise error
        if self.fatal is not None:
            raise self.fatal

    def server_stats(self) -> list[dict]:
        """Each server's counters (see Server.stats), for the metrics."""
        with self.lock:
            return [server.stats() for server in self.servers]

    def _least_busy(self, capacity: bool) -> Server | None:
        """The up server with the fewest outstanding requests (then the fewest sent); with `capacity`, only
        one below `inflight`."""
        servers = [s for s in self.servers if s.up and (not capacity or s.outstanding < self.options.inflight)]
        return min(servers, key=lambda s: (s.outstanding, s.sent), default=None)

    def _send(self, job: Job, server: Server) -> None:
        """Start the job's request on `server` (lock held)."""
        server.outstanding += 1
        server.sent += 1
        requested = [self.grpc.InferRequestedOutput(name) for name in server.output_names]
        reply = functools.partial(self._on_reply, job, server, time.perf_counter())
        try:
            server.client.async_infer(self.spec.model, job.inputs, reply, outputs=requested,
                                      client_timeout=self.options.timeout, headers=self.headers)
        except Exception as exc:  # noqa: BLE001 - any failure to send is the server's: the job goes elsewhere
            server.outstanding -= 1
            self._failed(job, server, error_text(exc))

    def _on_reply(self, job: Job, server: Server, sent: float, result=None, error=None) -> None:
        """A request's end, on a gRPC thread: the job is done, or goes to another server."""
        seconds = time.perf_counter() - sent
        outputs, failure = None, error_text(error) if error is not None else None
        if failure is None:
            try:
                outputs = [result.as_numpy(name) for name in server.output_names]
            except Exception as exc:  # noqa: BLE001 - raised here it would be lost on gRPC's thread
                failure = f"unreadable reply ({error_text(exc)})"
            missing = [name for name, array in zip(server.output_names, outputs or (), strict=False)
                       if array is None]
            failure = failure or (f"the reply lacks {', '.join(missing)}" if missing else None)
        with self.lock:
            server.outstanding -= 1
            if job.done.is_set():  # given up on meanwhile
                return
            if failure is None:
                server.record(seconds)
                self.troubled_since = None
                self._done(job, [np.array(array) for array in outputs])
            else:
                self._failed(job, server, failure)
            self.lock.notify_all()

    def _done(self, job: Job, outputs: list[np.ndarray] | None) -> None:
        job.outputs, job.inputs = outputs, None
        self.unfinished.pop(job.seq, None)
        job.done.set()

    def _failed(self, job: Job, server: Server, failure: str) -> None:
        """Mark the server down (probed again after its back-off) and send the job elsewhere, or park it."""
        server.errors += 1
        server.last_error = failure
        now = time.monotonic()
        if server.up:
            server.up = False
            server.retry_at = now + server.backoff
            log.warning("%s failed (%s); its mosaics go to the other servers, retrying it in %.1f s",
                        self._where(server), failure, server.backoff)
            server.backoff = min(2 * server.backoff, BACKOFF_MAX)
        self.troubled_since = self.troubled_since or now
        target = self._least_busy(capacity=False)
        if target is None:
            self.parked.append(job)
        else:
            self._send(job, target)

    def _watch(self) -> None:
        """The monitor thread: probe down servers when due, resend parked mosaics, give up after the window."""
        while not self.closing.wait(MONITOR_EVERY):
            with self.lock:
                now = time.monotonic()
                due = [s for s in self.servers if not s.up and s.retry_at <= now]
            for server in due:
                self._probe(server)
            with self.lock:
                while self.parked and (target := self._least_busy(capacity=False)) is not None:
                    self._send(self.parked.pop(0), target)
                pending = self.unfinished or self.waiting
                if (pending and self.troubled_since is not None and self.fatal is None
                        and time.monotonic() - self.troubled_since > self.options.retry_window):
                    self._give_up()
                self.lock.notify_all()

    def _probe(self, server: Server) -> None:
        """Check a down server again; up if it answers with the same model, else its back-off doubles."""
        try:
            names, failure = self._check(server), None
        except (Unreachable, PruneyoloError) as exc:
            names, failure = (), str(exc)
        with self.lock:
            if failure is None:
                server.output_names, server.up = names, True
                log.warning("%s is back", self._where(server))
            else:
                server.last_error = failure
                server.retry_at = time.monotonic() + server.backoff
                server.backoff = min(2 * server.backoff, BACKOFF_MAX)

    def _give_up(self) -> None:
        """No answer for the retry window: hand over the unfinished mosaics empty and keep the error (lock held)."""
        detail = "; ".join(f"{s.address}: {s.last_error or 'no error'}" for s in self.servers)
        lost = len(self.unfinished)
        self.fatal = ArgumentError(
            "backend", f"{self.spec.text}: no server answered for {self.options.retry_window:g} s ({detail}); {lost} "
            "mosaics not inferred, every result received was written; check the servers (or raise {backend_retry})",
            ("backend_retry",))
        for job in list(self.unfinished.values()):
            self._done(job, None)
        self.parked.clear()

    def _deliver(self) -> None:
        """The result thread: wait for each job in submission order, hand its outputs to on_result."""
        while (job := self.in_order.get()) is not None:
            try:
                job.done.wait()
                outputs = None if job.outputs is None else self.keep(job.outputs)
                self.on_result(job.userdata, outputs, time.perf_counter() - job.submitted)
            except BaseException as exc:  # noqa: BLE001 - kept for the submitting thread, not lost
                with self.lock:
                    self.error = self.error or exc
            finally:
                self.in_order.task_done()
        self.in_order.task_done()
