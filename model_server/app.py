"""`create_app(settings)`: the FastAPI app of one model directory, built in clear steps.

Reads model.yaml (cheap and needed for the OpenAPI schema); the heavy load runs in the
background from the lifespan, so the probes answer at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_server.dataplane import DataPlane
from model_server.errors import PayloadTooLarge
from model_server.metrics import UNKNOWN_MODEL, Metrics
from model_server.model import ServedModel
from model_server.modelcard import load_model_card
from model_server.routes import api, errors, health, v2
from model_server.routes.errors import error_response
from model_server.settings import ServerSettings

logger = logging.getLogger("model_server.access")
GRPC_GRACE_SECONDS = 30.0  # in-flight RPCs get as long as uvicorn's graceful shutdown gives requests


class RequestObserver:
    """Pure ASGI middleware: body size limit, in-flight gauge, metrics and one log line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_request_bytes: int, models: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.models = models  # label values come only from here (and UNKNOWN_MODEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        limit = self.max_request_bytes

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"request body exceeds maxRequestBytes ({limit} bytes)")
            return message

        self.metrics.in_flight.inc()
        try:
            if _content_length(scope) > limit:
                response = error_response(
                    413, "PayloadTooLarge", [f"request body exceeds maxRequestBytes ({limit} bytes)"]
                )
                await response(scope, receive, send_observed)
            else:
                await self.app(scope, receive_limited, send_observed)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - began
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            model = scope.get("path_params", {}).get("name", "")
            label = model if not model or model in self.models else UNKNOWN_MODEL
            self.metrics.observe_request(label, endpoint, str(status), seconds)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "model": model or None,
                    "status": status,
                    "latencyMs": round(seconds * 1000, 3),
                    "outcome": "ok" if status < 400 else "client_error" if status < 500 else "server_error",
                },
            )


def _content_length(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def create_app(settings: ServerSettings) -> FastAPI:
    """The server for `settings.model_dir`.

    Raises:
        ModelCardError: model.yaml is missing or invalid (nothing to serve).
    """
    card = load_model_card(settings.model_dir)
    model = ServedModel(card, settings.model_dir, settings.policies, settings.public_key, settings.trust)
    metrics = Metrics()
    dataplane = DataPlane(
        model,
        metrics,
        settings.max_batch_size,
        settings.policy_timeout_seconds,
        settings.recheck_seconds,
        settings.batch_latency_budget_ms / 1000,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        async with _grpc(settings, dataplane, metrics):
            yield
        await dataplane.stop()

    app = FastAPI(
        title=f"{card.name} model server",
        version=card.version,
        description=card.description or f"Serves the {card.flavor} model {card.name!r}.",
        lifespan=lifespan,
        # the server reports through its own Prometheus metrics; FastAPI's OpenTelemetry hooks
        # would otherwise look up three global providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.dataplane = dataplane
    app.state.metrics = metrics
    _register_endpoints(app, dataplane, metrics)
    _document_fast_routes_and_model_name(app, card.name)
    errors.register(app)
    app.add_middleware(
        RequestObserver, metrics=metrics, max_request_bytes=settings.max_request_bytes, models=frozenset({card.name})
    )
    return app


@asynccontextmanager
async def _grpc(settings: ServerSettings, dataplane: DataPlane, metrics: Metrics) -> AsyncIterator[None]:
    """v2 gRPC on the app's event loop while the app runs, if `settings.grpc_port` is set (imported
    only then: its protobuf descriptors load only where gRPC is served)."""
    if not settings.grpc_port:
        yield
        return
    from model_server.grpc_server import start_grpc, stop_grpc

    server = await start_grpc(dataplane, metrics, settings.grpc_host, settings.grpc_port, settings.max_request_bytes)
    try:
        yield
    finally:
        await stop_grpc(server, GRPC_GRACE_SECONDS)


def _document_fast_routes_and_model_name(app: FastAPI, name: str) -> None:
    """Add the fast routes' operations, and tell OpenAPI clients (and schemathesis) the one
    valid `{name}`; other names still get a 404."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema["paths"].update(getattr(app.state, "fast_operations", {}))
            for operation in (op for item in schema["paths"].values() for op in item.values()):
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path" and parameter["name"] == "name":
                        parameter["schema"]["enum"] = [name]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _register_endpoints(app: FastAPI, dataplane: DataPlane, metrics: Metrics) -> None:
    health.register(app, dataplane)
    api.register(app, dataplane)
    v2.register(app, dataplane)

    @app.get("/metrics", tags=["metrics"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
