"""Kubernetes probes: liveness, readiness and startup under `/api/health` (200 good, 503 not)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from model_server.dataplane import DataPlane
from model_server.routes.responses import json_response


def register(app: FastAPI, dataplane: DataPlane) -> None:
    model = dataplane.model

    def probe(good: bool, yes: str, no: str) -> Response:
        body = {"status": yes if good else no, "model": model.status()}
        return json_response(body, 200 if good else 503)

    @app.get("/api/health", tags=["health"], summary="Liveness: NOT_HEALTHY after a failed load")
    async def health() -> Response:
        return probe(dataplane.live(), "HEALTHY", "NOT_HEALTHY")

    @app.get("/api/health/ready", tags=["health"], summary="Readiness: loaded, policies compiled, not draining")
    async def ready() -> Response:
        return probe(dataplane.ready(), "READY", "NOT_READY")

    @app.get("/api/health/startup", tags=["health"], summary="Startup: loading has finished")
    async def startup() -> Response:
        return probe(dataplane.started(), "STARTED", "STARTING")
