"""`modeldeploy serve` as a real process on 127.0.0.1: probes during a slow load, a failed
load, structured logs, SIGTERM under load, and schemathesis against its own OpenAPI."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from server_support import PUBLIC_KEY, SETOSA, VIRGINICA, ServerProcess

pytestmark = pytest.mark.slow


def test_iris_endpoints_and_json_request_logs(iris_dir: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(iris_dir)
    with httpx.Client(base_url=server.url) as client:
        for path in (
            "/api/health",
            "/api/health/ready",
            "/api/health/startup",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/iris",
            "/v2/models/iris/ready",
            "/api/models",
            "/api/models/iris/metadata",
            "/metrics",
            "/openapi.json",
            "/docs",
        ):
            assert client.get(path).status_code == 200, path
        assert client.post("/api/models/iris/prediction", json=VIRGINICA).json()["prediction"] == {
            "species": "virginica"
        }
        infer = client.post(
            "/v2/models/iris/infer",
            json={"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": list(SETOSA.values())}]},
        )
        assert infer.json()["outputs"][0]["data"] == ["setosa"]
        assert client.post("/api/models/iris/prediction", content=b"{oops").status_code == 400
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    requests = [
        line for line in lines if line["message"] == "request" and line["path"] == "/api/models/iris/prediction"
    ]
    assert [(r["model"], r["status"], r["outcome"]) for r in requests] == [
        ("iris", 200, "ok"),
        ("iris", 400, "client_error"),
    ]
    assert all(r["latencyMs"] > 0 for r in requests)


def test_onnx_flavor_served_by_the_real_process(onnx_dir: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(onnx_dir)
    with httpx.Client(base_url=server.url) as client:
        batch = client.post("/api/models/iris-onnx/prediction", json=[SETOSA, VIRGINICA])
        assert [p["prediction"]["species"] for p in batch.json()["predictions"]] == ["setosa", "virginica"]
        assert client.get("/v2/models/iris-onnx/ready").status_code == 200
    assert server.stop() == 0


def test_probe_sequence_during_a_slow_load(
    pricing_dir: Callable[..., Path], start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(pricing_dir(load_seconds=4.0), wait="listening")
    with httpx.Client(base_url=server.url) as client:
        loading = {
            path: client.get(path).status_code for path in ("/api/health", "/api/health/startup", "/api/health/ready")
        }
        assert loading == {"/api/health": 200, "/api/health/startup": 503, "/api/health/ready": 503}
        assert client.get("/api/health/ready").json()["reason"] == "Loading"
        assert (
            client.post("/api/models/pricing/prediction", json={"age": 1, "smoker": False, "cost": 1.0}).status_code
            == 503
        )
        server.wait_started()
        loaded = {
            path: client.get(path).status_code for path in ("/api/health", "/api/health/startup", "/api/health/ready")
        }
        assert loaded == {"/api/health": 200, "/api/health/startup": 200, "/api/health/ready": 200}
        text = client.get("/metrics").text
    load = next(
        line for line in text.splitlines() if line.startswith('modeldeploy_model_load_seconds{model="pricing"}')
    )
    assert float(load.split()[-1]) >= 4.0


def test_failed_load_keeps_answering_probes_not_healthy(
    pricing_dir: Callable[..., Path], start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(pricing_dir(fail_load=True))
    with httpx.Client(base_url=server.url) as client:
        live = client.get("/api/health")
        assert live.status_code == 503 and live.json()["status"] == "NOT_HEALTHY"
        assert "weights are corrupt" in live.json()["model"]["error"]
        ready = client.get("/api/health/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "LoadFailed"
        assert client.get("/v2/health/live").status_code == 503
    assert server.process.poll() is None


def test_config_errors_exit_with_a_clear_message(iris_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("maxRequestBytes: lots\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from modeldeploy.cli import main; main()",
            "serve",
            str(iris_dir),
            "--config",
            str(config),
            "--public-key",
            str(PUBLIC_KEY[0]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "maxRequestBytes" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_drops_no_request(
    workers: int, pricing_dir: Callable[..., Path], start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(pricing_dir(predict_seconds=0.05), config={"drainSeconds": 2.0}, workers=workers)
    row = {"age": 30, "smoker": False, "cost": 100.0}
    statuses: list[int] = []
    failures: list[str] = []

    async def load(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            for _ in range(1000):  # bounded; stops when the "endpoints controller" stops routing here
                if stop.is_set():
                    return
                try:
                    response = await client.post("/api/models/pricing/prediction", json=row)
                    statuses.append(response.status_code)
                except httpx.TransportError as err:
                    failures.append(repr(err))

    async def scenario() -> None:
        stop = asyncio.Event()
        workers = [asyncio.create_task(load(stop)) for _ in range(8)]
        await asyncio.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=server.url) as probe:
            for _ in range(200):  # readiness fails while the server still serves
                if (await probe.get("/api/health/ready")).status_code == 503:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("readiness never failed after SIGTERM")
            served_before = len(statuses)
            await asyncio.sleep(0.3)  # traffic still arrives while endpoints are being updated
            assert len(statuses) > served_before, "no request was served after readiness failed"
        stop.set()
        await asyncio.gather(*workers)

    asyncio.run(scenario())
    assert failures == []
    assert statuses and set(statuses) == {200}
    assert server.process.wait(timeout=30) == 0
    assert "SIGTERM: draining" in server.logs()


@pytest.mark.parametrize("model", ["iris", "pricing"])
def test_schemathesis_finds_no_server_error(
    model: str, iris_dir: Path, pricing_dir: Callable[..., Path], start_server: Callable[..., ServerProcess]
) -> None:
    policies = [
        {"name": "no-smoker-over-60", "when": "input.smoker && input.age > 60", "action": "reject"},
        {"name": "no-negative-price", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0},
        {"name": "cap", "when": "prediction.price > 1000.0", "action": "override", "expression": "1000.0"},
    ]
    server = start_server(iris_dir) if model == "iris" else start_server(pricing_dir(), config={"policies": policies})
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--request-timeout",
            "10",
            "--no-color",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout
    assert '"status":500' not in server.logs()
