"""A KServe v2 gRPC model server for the remote-backend tests and tools/bench_remote: one IR served by `kserve`
(a kserve.Model whose async predict runs OpenVINO in a thread pool, so requests overlap), gRPC only (no REST),
optionally behind TLS and a bearer token, as OpenVINO Model Server would serve it.

    python tests/kserve_server.py MODEL.xml --name NAME [--port 0] [--precision f32] [--requests N] [--threads N]
        [--hang] [--tls-cert CERT --tls-key KEY] [--token TOKEN]

Prints `ready PORT PRECISION` (the precision OpenVINO compiled with) on stdout once it serves; SIGTERM ends it. `--hang`: predict never answers (readiness and
metadata still do), for timeout tests.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import openvino as ov
from grpc import aio
from kserve import Model
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from pruneyolo.detect.interface import DATATYPES
from pruneyolo.export.precision import precision_name
from pruneyolo.runner.adapter import compile_config

MESSAGE_BYTES = 64 << 20  # a 1664x1664 mosaic is 8 MB; gRPC's default limit is 4 MB


def tensor_type(port) -> dict:
    """A compiled model's input or output as KServe metadata."""
    return {"name": port.get_any_name(), "datatype": DATATYPES[port.get_element_type().get_type_name()],
            "shape": list(port.get_shape())}


class OpenVinoModel(Model):
    """One compiled IR and a pool of its infer requests; each predict borrows one in an executor thread."""

    def __init__(self, name: str, xml: str, precision: str | None, requests: int | None, threads: int | None,
                 hang: bool):
        super().__init__(name)
        self.xml, self.precision, self.requests, self.hang = xml, precision, requests, hang
        self.config = compile_config("throughput", precision, requests)
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = str(threads)

    def load(self) -> bool:
        self.compiled = ov.Core().compile_model(self.xml, "CPU", self.config)
        count = self.requests or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.idle: queue.Queue = queue.Queue()
        for _ in range(count):
            self.idle.put(self.compiled.create_infer_request())
        self.executor = ThreadPoolExecutor(count, thread_name_prefix="infer")
        self.input = tensor_type(self.compiled.input(0))
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return [self.input]

    def get_output_types(self) -> list[dict]:
        return [tensor_type(port) for port in self.compiled.outputs]

    def _infer(self, image: np.ndarray) -> list[np.ndarray]:
        request = self.idle.get()
        try:
            request.infer({0: image})
            return [request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]
        finally:
            self.idle.put(request)

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        if self.hang:
            await asyncio.Event().wait()
        tensor = payload.inputs[0]
        wanted = self.input
        if (tensor.name, tensor.datatype, list(tensor.shape)) != (wanted["name"], wanted["datatype"], wanted["shape"]):
            raise InvalidInput(f"expected {wanted}, got {tensor.name} {tensor.datatype} {tensor.shape}")
        arrays = await asyncio.get_running_loop().run_in_executor(self.executor, self._infer, tensor.as_numpy())
        outputs = []
        for spec, array in zip(self.get_output_types(), arrays, strict=True):
            outputs.append(InferOutput(spec["name"], list(array.shape), spec["datatype"]))
            outputs[-1].set_data_from_numpy(array, binary_data=True)  # raw bytes, never a Python list
        return InferResponse(payload.id, self.name, outputs)


class BearerToken(aio.ServerInterceptor):
    """Refuse any call without `authorization: Bearer TOKEN` (UNAUTHENTICATED), as an ingress would."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}"

    async def intercept_service(self, continuation, details):
        if dict(details.invocation_metadata or ()).get("authorization") == self.expected:
            return await continuation(details)
        return grpc.unary_unary_rpc_method_handler(self._deny)

    @staticmethod
    async def _deny(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


async def serve(args: argparse.Namespace, credentials: grpc.ServerCredentials | None) -> None:
    model = OpenVinoModel(args.name, args.model, args.precision, args.requests, args.threads, args.hang)
    model.load()
    repository = ModelRepository()
    repository.update(model)
    servicer = InferenceServicer(DataPlane(model_registry=repository), ModelRepositoryExtension(repository))
    interceptors = [ExceptionToStatusInterceptor()] + ([BearerToken(args.token)] if args.token else [])
    server = aio.server(interceptors=interceptors, options=[("grpc.max_receive_message_length", MESSAGE_BYTES),
                                                            ("grpc.max_send_message_length", MESSAGE_BYTES)])
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    address = f"{args.host}:{args.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    precision = precision_name(model.compiled.get_property("INFERENCE_PRECISION_HINT"))
    print(f"ready {port} {precision}", flush=True)
    await stop.wait()
    await server.stop(grace=0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--precision", choices=["f32", "bf16", "f16"])
    parser.add_argument("--requests", type=int, help="infer requests (default: the device's optimum)")
    parser.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    parser.add_argument("--hang", action="store_true", help="predict never answers")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--token")
    args = parser.parse_args()
    credentials = None
    if args.tls_cert:
        pair = (Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())
        credentials = grpc.ssl_server_credentials([pair])
    asyncio.run(serve(args, credentials))
    sys.exit(0)


if __name__ == "__main__":
    main()
