"""Kubernetes probes: liveness, readiness and startup under `/api/health` (200 good, 503 not).

Readiness answers the contract's `ReadinessReport` (ready, reason, message, failedFiles): the
operator reads it from a pod that stopped being ready.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from model_server.dataplane import DataPlane
from model_server.routes.responses import json_response
from modeldeploy.contract.pod import ReadinessReport


def register(app: FastAPI, dataplane: DataPlane) -> None:
    model = dataplane.model

    def probe(good: bool, yes: str, no: str) -> Response:
        body = {"status": yes if good else no, "model": model.status()}
        return json_response(body, 200 if good else 503)

    @app.get("/api/health", tags=["health"], summary="Liveness: NOT_HEALTHY after a failed load")
    async def health() -> Response:
        return probe(dataplane.live(), "HEALTHY", "NOT_HEALTHY")

    @app.get(
        "/api/health/ready",
        tags=["health"],
        summary="Readiness: loaded, policies compiled, files as signed, not draining; says why not",
        responses={code: {"model": ReadinessReport} for code in (200, 503)},
    )
    async def ready() -> Response:
        report = dataplane.readiness()
        return json_response(report.model_dump(by_alias=True, mode="json"), 200 if report.ready else 503)

    @app.get("/api/health/startup", tags=["health"], summary="Startup: loading has finished")
    async def startup() -> Response:
        return probe(dataplane.started(), "STARTED", "STARTING")
