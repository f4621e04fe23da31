"""The in-process backend (`openvino:`, the default): device checks, compile options and what a compiled model
ran at, asynchronous infer requests.

It knows nothing of mosaics: `submit(image, userdata)` in, `on_result(userdata, outputs, seconds)` out, called
in submission order from one Python thread of the adapter's own. An exception raised there is kept and
re-raised by the next `submit` or `wait`.

No Python callback is ever given to OpenVINO. With AsyncInferQueue.set_callback, an OpenVINO stream thread
holds a reference to the Python callback after `wait_all()` returns and drops it (taking the GIL) only later;
if the CompiledModel is destroyed meanwhile, its destructor joins that thread while holding the GIL, and the
process hangs. So requests are started with `start_async()` and waited for by the result thread; `close()`
(or a `with` block) then drops the requests before the compiled model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov

from pruneyolo.detect.metadata import ModelInfo
from pruneyolo.errors import ArgumentError, PruneyoloError
from pruneyolo.export.precision import inference_precision, precision_name

VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
DEVICE_PROPERTIES = ("FULL_DEVICE_NAME", "DEVICE_ARCHITECTURE", "OPTIMIZATION_CAPABILITIES",
                     "RANGE_FOR_ASYNC_INFER_REQUESTS", "RANGE_FOR_STREAMS", "INFERENCE_PRECISION_HINT")
INT8_CONV_PRECISIONS = {"u8", "i8"}  # a CPU convolution's runtimePrecision when it runs in int8


def ran_at(compiled) -> str:
    """What a compiled model runs at: its inference precision, prefixed i8+ when its convolutions run in int8
    (CPU); 'unknown' where the device does not report it."""
    try:
        precision = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except RuntimeError:
        return "unknown"
    try:
        conv_precisions = {node.get_rt_info()["runtimePrecision"].astype(str)
                           for node in compiled.get_runtime_model().get_ordered_ops()
                           if node.get_rt_info()["layerType"].astype(str) == "Convolution"}
    except (KeyError, RuntimeError):  # a device whose runtime model has no per-layer precisions
        return precision
    return f"i8+{precision}" if conv_precisions & INT8_CONV_PRECISIONS else precision


def compile_config(hint: str, precision: str | None = None, requests: int | None = None) -> dict[str, str]:
    """OpenVINO compile options: PERFORMANCE_HINT, plus the inference precision and request count if given."""
    config = {"PERFORMANCE_HINT": hint.upper()}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = inference_precision(precision)
    if requests:
        config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(requests)
    return config


def requested_devices(device: str) -> list[str]:
    """The physical devices a device string names: 'AUTO:GPU,CPU' -> ['GPU', 'CPU']; 'AUTO' -> []."""
    head, _, rest = device.partition(":")
    if head.upper() in VIRTUAL_DEVICES:
        return [d.split("(")[0].strip() for d in rest.split(",") if d.strip()]
    return [device]


def check_device(available: list[str], device: str) -> None:
    """Raise one clear line when `device` (or a device inside AUTO:/MULTI:/HETERO:) is not available."""
    for name in requested_devices(device):
        if name in available or any(a.split(".")[0] == name for a in available):
            continue
        hint = ""
        if name.upper().startswith("MYRIAD"):
            hint = (f"; NCS2 (MYRIAD) support ended with OpenVINO 2022.3 LTS, which it needs "
                    f"(this is OpenVINO {ov.__version__.split('-')[0]})")
        elif name.upper().startswith("GPU"):
            hint = "; GPU needs the Intel GPU compute runtime (OpenCL/Level Zero driver) installed"
        elif name.upper().startswith("NPU"):
            hint = "; NPU needs the Intel NPU driver installed"
        raise PruneyoloError(f"device {name!r} is not available; available devices: "
                             f"{', '.join(available) or 'none'}{hint}")


def property_text(value) -> str:
    """A property value as plain text (OpenVINO element types by their short name, e.g. 'bf16')."""
    return value.get_type_name() if isinstance(value, ov.Type) else str(value)


def device_properties(core: ov.Core, device: str) -> dict[str, str]:
    """The properties `pruneyolo devices` shows, those the device supports, as strings."""
    supported = core.get_property(device, "SUPPORTED_PROPERTIES")
    return {name: property_text(core.get_property(device, name)) for name in DEVICE_PROPERTIES if name in supported}


def copies(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """A result's outputs copied out of its request, which the next inference overwrites."""
    return [output.copy() for output in outputs]


def open_in_process(xml, address: str = "openvino:", device: str = "CPU", hint: str = "throughput",
                    precision: str | None = None, nireq: int | None = None) -> Adapter:
    """The `openvino:` backend: the IR compiled here on `device`."""
    if address.partition(":")[2]:
        raise ArgumentError("backend", f"{address!r}: the in-process backend is just 'openvino:' (its device is an "
                                       "option of its own)")
    return Adapter(xml, device, hint, precision, nireq)


class Adapter:
    """A compiled IR, its metadata and a pool of infer requests whose results go to `on_result`, in order."""

    def __init__(self, xml: str | Path, device: str = "CPU", hint: str = "throughput",
                 precision: str | None = None, nireq: int | None = None, core: ov.Core | None = None):
        core = core or ov.Core()
        if not Path(xml).is_file():
            raise PruneyoloError(f"{xml}: no such IR file")
        check_device(core.available_devices, device)
        model = core.read_model(str(xml))
        self.info = ModelInfo.read(model)
        shape = model.input(0).get_partial_shape()
        if shape.is_dynamic or len(shape) != 4 or shape[3].get_length() != 3:
            raise PruneyoloError(f"{xml}: expected a [1, H, W, 3] u8 BGR input, got {shape}")
        self.compiled = core.compile_model(model, device, compile_config(hint, precision, nireq))
        self.requests = int(nireq or self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.idle: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(self.requests):
            self.idle.put(self.compiled.create_infer_request())
        self.in_flight: queue.Queue = queue.Queue()  # (request, userdata, submitted) in order; None ends
        self.input_size = int(shape[2].get_length()), int(shape[1].get_length())  # (width, height)
        self.precision_used = ran_at(self.compiled)
        self.where = device
        self.outputs = len(self.compiled.outputs)
        self.on_result: Callable[[object, list[np.ndarray], float], None] = lambda *_: None
        self.keep: Callable[[list[np.ndarray]], list[np.ndarray]] = copies
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.results = threading.Thread(target=self._deliver, name="adapter-results", daemon=True)
        self.results.start()

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        """Deliver every result in flight, end the result thread, then drop the requests, then the compiled model."""
        if self.results is not None:
            self.in_flight.put(None)
            self.results.join()
        self.results = self.idle = None
        self.compiled = None

    def submit(self, image: np.ndarray | ov.Tensor, userdata) -> None:
        """Start inference on a HxWx3 u8 image, copied, or on a `shared_tensor`, read in place (blocks while
        every request is busy)."""
        self.raise_pending()
        request = self.idle.get()
        submitted = time.perf_counter()
        request.set_input_tensor(image if isinstance(image, ov.Tensor) else ov.Tensor(image[None]))
        request.start_async()
        self.in_flight.put((request, userdata, submitted))

    @staticmethod
    def shared_tensor(image: np.ndarray) -> ov.Tensor:
        """A tensor over a HxWx3 u8 image, for `submit` without a copy: the image must stay unchanged from
        submit until its result arrives. Made once per buffer, it also spares each submit the input dispatch."""
        return ov.Tensor(image[None], shared_memory=True)

    def wait(self) -> None:
        """Wait until every submitted result is delivered, then re-raise any exception kept meanwhile."""
        self.in_flight.join()
        self.raise_pending()

    def server_stats(self) -> list[dict]:
        """Per-server counters: none in process (see remote.RemoteAdapter)."""
        return []

    def raise_pending(self) -> None:
        with self.lock:
            error, self.error = self.error, None
        if error is not None:
            raise error

    def _deliver(self) -> None:
        """The result thread: wait for each request in submission order, hand its outputs to on_result."""
        while (item := self.in_flight.get()) is not None:
            request, userdata, submitted = item
            try:
                request.wait()
                outputs = self.keep([request.get_output_tensor(i).data for i in range(self.outputs)])
                self.on_result(userdata, outputs, time.perf_counter() - submitted)
            except BaseException as exc:  # noqa: BLE001 - kept for the submitting thread, not lost
                with self.lock:
                    self.error = self.error or exc
            finally:
                self.idle.put(request)
                self.in_flight.task_done()
        self.in_flight.task_done()
