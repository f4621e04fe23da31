"""KServe v2 test servers (tests/kserve_server.py) as subprocesses, for the remote-backend tests and
tools/bench_remote: started together, waited for, and always stopped."""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "kserve_server.py"
START_LIMIT = 120.0  # seconds for a server to import kserve, compile its IR and listen (a loaded 2-core box)

# tritonclient in this process, kserve only in the servers' (both register the same protobuf names)
MISSING = [name for name in ("tritonclient", "kserve") if importlib.util.find_spec(name) is None]
SKIP_REASON = "needs the remote and test extras (tritonclient[grpc], kserve): pip install -e '.[test]'"


class ServerProcess:
    """One tests/kserve_server.py serving `xml` as `name`; `port` and `precision` once `wait_ready` returns."""

    def __init__(self, xml: Path, name: str, *extra: str, log: Path | None = None):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, str(SERVER), str(xml), "--name", name, *extra]
        self.log = open(log or os.devnull, "w")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.port: int | None = None
        self.precision = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, limit: float = START_LIMIT) -> int:
        """Block until the server prints `ready PORT PRECISION` (or fail, naming its exit status)."""
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(limit)
        if not lines or not lines[0].startswith("ready "):
            self.stop()
            raise RuntimeError(f"test server did not start (exit status {self.process.poll()}); see {self.log.name}")
        _, port, self.precision = lines[0].split()
        self.port = int(port)
        return self.port

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-request, as a crashed or unplugged one does."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.stdout.close()
        self.log.close()


@contextlib.contextmanager
def served(*servers: tuple, log_dir: Path | None = None):
    """Start servers given as (xml, name, *extra args) together, yield them once all are ready, stop them all;
    with `log_dir`, server i writes its stderr to log_dir/server-i.log."""
    started: list[ServerProcess] = []
    try:
        for index, (xml, name, *extra) in enumerate(servers):
            log = log_dir / f"server-{index}.log" if log_dir else None
            started.append(ServerProcess(xml, name, *extra, log=log))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


@contextlib.contextmanager
def silent_listener():
    """A TCP port that accepts connections and never says a word (a hung host), as 127.0.0.1:PORT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def self_signed(directory: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `host` (its own CA) and its key, as PEM files: (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def wait_for_lines(path: Path, count: int, limit: float) -> bool:
    """Whether `path` has at least `count` lines within `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return True
        time.sleep(0.05)
    return False
