"""Where a run's mosaics are inferred: the `Backend` interface the pipeline drives, and the backends by address
scheme (`openvino:` in process, the default; `kserve://` model servers), each taking its own options.

A backend is opened from the model's .xml, an address and options; it checks them itself. Options a backend
does not take are refused here, in one line, before anything is opened. A `BackendKind` in BACKENDS (one entry,
from anywhere) adds a backend without touching the pipeline or the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pruneyolo.errors import ArgumentError

if TYPE_CHECKING:
    import numpy as np

    from pruneyolo.detect.metadata import ModelInfo

DEFAULT_SCHEME = "openvino"
KSERVE_INFLIGHT = 4  # requests in flight per model server unless nireq says otherwise


class Backend(Protocol):
    """What the pipeline needs of a backend: the model's metadata and input size, `submit` with results handed
    to `on_result(userdata, outputs or None if never inferred, seconds)` in submission order from one thread of
    its own (an exception raised there is re-raised by the next `submit` or `wait`), what it ran at, its
    counters, and `close`.

    Before on_result, a backend may pass each result's outputs through `keep` (views valid during the call ->
    the arrays to hand over; the pipeline sets it to cut a decoded output to its confident rows, in that
    thread, instead of copying all of it). One that ignores `keep` hands over whole outputs: the same
    detections come out."""

    info: ModelInfo
    input_size: tuple[int, int]  # (width, height) of the [1, H, W, 3] u8 BGR input
    requests: int  # requests it keeps in flight at most
    precision_used: str  # what the inference ran at, as the summary shows it
    where: str  # the device or servers, as the summary names them
    on_result: Callable[[object, list[np.ndarray] | None, float], None]
    keep: Callable[[list[np.ndarray]], list[np.ndarray]]

    def shared_tensor(self, image: np.ndarray) -> object:
        """What `submit` takes for this HxWx3 u8 buffer, made once per buffer."""

    def submit(self, image, userdata) -> None:
        """Infer one image (a `shared_tensor`); blocks while the backend is full."""

    def wait(self) -> None:
        """Return once every submitted result is delivered; re-raise an error kept meanwhile."""

    def server_stats(self) -> list[dict]:
        """Per-server counters for the metrics (none in process)."""

    def close(self) -> None:
        """Deliver what is in flight and free everything; safe to call twice."""


@dataclass(frozen=True)
class BackendKind:
    """One address scheme: its opener `open(xml, address, **options) -> Backend`, the options it takes, how its
    addresses look, and what to tell a user who gives it an option it does not take."""

    scheme: str
    open: Callable[..., Backend]
    options: tuple[str, ...]
    usage: str
    refusal: str


def _open_openvino(xml, address: str, **options) -> Backend:
    from pruneyolo.runner.adapter import open_in_process

    return open_in_process(xml, address, **options)


def _open_kserve(xml, address: str, **options) -> Backend:
    from pruneyolo.runner.remote import open_kserve

    return open_kserve(xml, address, **options)


BACKENDS: dict[str, BackendKind] = {
    "openvino": BackendKind("openvino", _open_openvino, ("device", "hint", "precision", "nireq"), "openvino:",
                            "only model-server backends take it (backend kserve://HOST:PORT/NAME)"),
    "kserve": BackendKind("kserve", _open_kserve,
                          ("nireq", "backend_token_file", "backend_tls", "backend_ca", "backend_timeout",
                           "backend_retry"),
                          "kserve://HOST:PORT[,HOST:PORT...]/NAME",
                          "the server's own config chooses (OVMS: target_device and plugin_config in config.json)"),
}


def scheme_of(address: str | None) -> str:
    """The scheme of a backend address ('kserve://a:1/m' -> 'kserve'); no address: in process."""
    if not address:
        return DEFAULT_SCHEME
    scheme, colon, _ = address.partition(":")
    if not colon or scheme not in BACKENDS:
        raise ArgumentError("backend", f"{address!r}: no backend for it; give one of "
                                       f"{', '.join(kind.usage for kind in BACKENDS.values())}")
    return scheme


def open_backend(xml, address: str | None, options: dict, given: Iterable[str] = ()) -> Backend:
    """The backend `address` names, opened on the IR `xml` with the options it takes; `given` are the options
    the user chose (not defaults): one the backend does not take is refused."""
    kind = BACKENDS[scheme_of(address)]
    if refused := [name for name in given if name not in kind.options]:
        raise ArgumentError(tuple(refused), f"is not taken by the {kind.scheme} backend: {kind.refusal}; drop it")
    if unknown := sorted(set(options) - {name for each in BACKENDS.values() for name in each.options}):
        raise ArgumentError(tuple(unknown), "is not an option of any backend")
    return kind.open(xml, address or f"{DEFAULT_SCHEME}:", **{k: v for k, v in options.items() if k in kind.options})
