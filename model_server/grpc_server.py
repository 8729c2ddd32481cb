"""Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`), health and reflection.

A thin adapter over the same `DataPlane` as REST: tensors go through `model_server.tensors`
(typed `contents`, or `raw_input_contents` in the inputs' order), predictions through
`DataPlane.predict` (so the same policies and readiness apply), and every RPC is counted
in the same request metrics (endpoint `/inference.GRPCInferenceService/METHOD`, status the
gRPC code's name). Outputs come back as `raw_output_contents` when the request sent raw
inputs or sets `binary_data_output`, else as typed contents. `grpc.health.v1.Health`
answers SERVING for the server (""), the model's name and the inference service only
while the data plane is ready (a Watch ends once the server drains). The server's exceptions map to gRPC status codes in
`STATUS_CODES` only. Runs on the caller's event loop: `start_grpc` and `stop_grpc`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from model_server._proto import grpc_predict_v2_pb2 as pb
from model_server._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.dataplane import DataPlane, policy_hits
from model_server.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    PolicyFailed,
    PolicyRejected,
    ServerError,
)
from model_server.metrics import UNKNOWN_MODEL, Metrics
from model_server.routes.v2 import EXTENSIONS, SERVER_VERSION
from model_server.tensors import (
    DATATYPES,
    KNOWN,
    NUMPY,
    Tensor,
    encode_raw,
    output_values,
    raw_tensor,
    requested_outputs,
    tensor,
    tensors_to_rows,
)

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("model_server.access")
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
NO_REPOSITORY = "this server serves the one signed model it started with; it has no model repository to load from"
WATCH_INTERVAL = 0.5  # seconds between readiness checks of a health Watch

# A policy rejection is not a malformed request (INVALID_ARGUMENT): the same input passes
# under other policies, so it fails a precondition of this deployment; retrying won't help.
STATUS_CODES: dict[type[ServerError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PolicyRejected: grpc.StatusCode.FAILED_PRECONDITION,
    PolicyFailed: grpc.StatusCode.FAILED_PRECONDITION,
}
# the typed `InferTensorContents` field of each datatype (FP16 has none: raw only)
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


_OUTCOMES = {grpc.StatusCode.OK: "ok", grpc.StatusCode.INTERNAL: "server_error"}


def status_code(err: ServerError) -> grpc.StatusCode:
    """The gRPC status of one of the server's exceptions (INTERNAL for anything unmapped)."""
    for cls in type(err).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def input_tensors(request: pb.ModelInferRequest) -> list[Tensor]:
    """The request's tensors: each from its `raw_input_contents` entry, or else its typed contents.

    Raises:
        InvalidInput: raw contents that are not one per input, FP16 without raw contents, or a
            tensor's data that does not fit its shape and datatype.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one per input")
    tensors = []
    for index, item in enumerate(request.inputs):
        if raw:
            tensors.append(raw_tensor(item.name, item.datatype, item.shape, raw[index]))
        elif item.datatype in KNOWN and item.datatype not in CONTENTS:
            raise InvalidInput(f"tensor {item.name!r}: {item.datatype} data goes in raw_input_contents")
        else:
            values = list(getattr(item.contents, CONTENTS.get(item.datatype, "bytes_contents")))
            tensors.append(tensor(item.name, item.datatype, item.shape, values))
    return tensors


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _binary_output(request: pb.ModelInferRequest) -> bool:
    if "binary_data_output" in request.parameters:
        flag = _parameter(request.parameters["binary_data_output"])
        if not isinstance(flag, bool):
            raise InvalidInput(f"parameters.binary_data_output must be a bool_param, not {flag!r}")
        return flag
    return bool(request.raw_input_contents)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` over one `DataPlane`."""

    def __init__(self, dataplane: DataPlane, metrics: Metrics) -> None:
        self.dataplane = dataplane
        self.metrics = metrics

    def _observed(self, context: grpc.aio.ServicerContext[Any, Any], method: str, model: str = "") -> _Observed:
        label = model if not model or model == self.dataplane.model.name else UNKNOWN_MODEL
        return _Observed(self.metrics, context, f"/{SERVICE}/{method}", label)

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        async with self._observed(context, "ServerLive"):
            return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        async with self._observed(context, "ServerReady"):
            return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        async with self._observed(context, "ModelReady", request.name):
            return pb.ModelReadyResponse(ready=self.dataplane.get_model(request.name).ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        async with self._observed(context, "ServerMetadata"):
            return pb.ServerMetadataResponse(name="modeldeploy", version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        async with self._observed(context, "ModelMetadata", request.name):
            card = self.dataplane.get_model(request.name).card

            def meta(fields: list[Any]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
                return [
                    pb.ModelMetadataResponse.TensorMetadata(name=f.name, datatype=DATATYPES[f.type], shape=[-1])
                    for f in fields
                ]

            return pb.ModelMetadataResponse(
                name=card.name,
                versions=[card.version],
                platform=card.flavor,
                inputs=meta(card.inputs),
                outputs=meta(card.outputs),
            )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        async with self._observed(context, "ModelInfer", request.model_name):
            dataplane = self.dataplane
            model = dataplane.get_model(request.model_name)
            card = model.card
            wanted = requested_outputs(card, [o.name for o in request.outputs] or None)
            raw = _binary_output(request)
            rows = dataplane.decode_rows(tensors_to_rows(card, input_tensors(request)))
            results = await dataplane.predict(model, rows)
            response = pb.ModelInferResponse(model_name=card.name, model_version=card.version, id=request.id)
            for field in wanted:
                datatype = DATATYPES[field.type]
                values = output_values(field, [r.output for r in results])
                output = response.outputs.add(name=field.name, datatype=datatype, shape=[len(results)])
                if raw:
                    response.raw_output_contents.append(encode_raw(datatype, values))
                elif datatype == "BYTES":
                    output.contents.bytes_contents.extend(str(v).encode("utf-8") for v in values)
                else:
                    getattr(output.contents, CONTENTS[datatype]).extend(np.asarray(values, NUMPY[datatype]).tolist())
            applied = policy_hits(results)
            if applied:
                response.parameters["policies"].string_param = orjson.dumps(applied).decode()
            return response

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RepositoryModelLoadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, NO_REPOSITORY)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RepositoryModelUnloadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, NO_REPOSITORY)


class _Observed:
    """One RPC: in flight, then counted and logged; a `ServerError` aborts it with its mapped status."""

    def __init__(
        self, metrics: Metrics, context: grpc.aio.ServicerContext[Any, Any], endpoint: str, model: str
    ) -> None:
        self.metrics = metrics
        self.context = context
        self.endpoint = endpoint
        self.model = model
        self.began = 0.0

    async def __aenter__(self) -> None:
        self.began = time.perf_counter()
        self.metrics.in_flight.inc()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        self.metrics.in_flight.dec()
        code = grpc.StatusCode.OK
        if isinstance(error, ServerError):
            code = status_code(error)
        elif isinstance(error, Exception):
            code = grpc.StatusCode.INTERNAL
            logger.error("unhandled error", exc_info=error)
        elif error is not None:  # the client went away (CancelledError)
            code = grpc.StatusCode.CANCELLED
        seconds = time.perf_counter() - self.began
        self.metrics.observe_request(self.model, self.endpoint, code.name, seconds)
        access_logger.info(
            "request",
            extra={
                "method": "gRPC",
                "path": self.endpoint,
                "model": self.model or None,
                "status": code.name,
                "latencyMs": round(seconds * 1000, 3),
                "outcome": _OUTCOMES.get(code, "client_error"),
            },
        )
        if isinstance(error, ServerError):
            metadata = tuple((key, str(value)) for key, value in error.details.items())
            await self.context.abort(code, "; ".join(error.messages) or type(error).__name__, metadata)
        if isinstance(error, Exception):
            await self.context.abort(code, f"{type(error).__name__}: {error}")


class HealthServicer(health_pb2_grpc.HealthServicer):
    """`grpc.health.v1.Health`: SERVING while the data plane is ready, for the services in `names`."""

    def __init__(self, dataplane: DataPlane, names: frozenset[str]) -> None:
        self.dataplane = dataplane
        self.names = names

    def _status(self, service: str) -> int:
        if service not in self.names:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        ready = self.dataplane.ready()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = self._status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if self.dataplane.model.draining:  # never serves again: let the server stop without waiting
                return
            await asyncio.sleep(WATCH_INTERVAL)


async def start_grpc(
    dataplane: DataPlane, metrics: Metrics, host: str, port: int, max_message_bytes: int = 4 * 1024 * 1024
) -> grpc.aio.Server:
    """Serve v2 gRPC, health and reflection on `host:port` from the running event loop.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane, metrics), server)
    names = frozenset({"", dataplane.model.name, SERVICE})
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(dataplane, names), server)
    reflection.enable_server_reflection((SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)
    await server.start()
    logger.info("gRPC listening", extra={"address": address})
    return server


async def stop_grpc(server: grpc.aio.Server, grace: float) -> None:
    """Stop accepting RPCs, let those in flight finish within `grace` seconds, then cancel the rest."""
    await server.stop(grace)
