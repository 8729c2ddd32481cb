"""Helpers for the model server tests: example rows, the in-process client, the server process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from devcluster.child import stop_child
from devcluster.ports import free_port
from model_server.app import create_app
from model_server.settings import ServerSettings
from modeldeploy.contract.trust import PolicyTrust, TrustBundle, TrustedSigner

REPO = Path(__file__).resolve().parents[2]
PUBLIC_KEY: list[Path] = []  # the trusted key of the signed test models (set by conftest)
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}


@asynccontextmanager
async def app_client(model_dir: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app for `model_dir` with its lifespan running, once loading has finished."""
    settings.setdefault("public_key", PUBLIC_KEY[0])
    app = create_app(ServerSettings(model_dir=model_dir, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await wait_for_start(client)
            yield client


async def wait_for_start(client: httpx.AsyncClient, timeout: float = 60.0) -> None:
    import anyio

    deadline = time.monotonic() + timeout
    while (await client.get("/api/health/startup")).status_code != 200:
        assert time.monotonic() < deadline, "model did not finish loading"
        await anyio.sleep(0.05)


def write_trust(path: Path, *public_keys: Path) -> Path:
    """A trust.json (the contract's TrustBundle) of one policy trusting these PEM public keys."""
    signers = tuple(TrustedSigner(name=key.stem, publicKeyPem=key.read_text()) for key in public_keys)
    path.write_text(TrustBundle(policies=(PolicyTrust(policy="release", signers=signers),)).document())
    return path


class ServerProcess:
    """`modeldeploy serve MODEL_DIR` as a child process on 127.0.0.1 (no drain wait unless configured).

    It trusts the session's public key (`--public-key`), or the `trust` file (`--trust`), and
    runs `workers` processes (one unless told; their metrics in `metrics_dir` when more). With
    `grpc` it also serves v2 gRPC on `grpc_address` (the port given as MODELDEPLOY_GRPC_PORT).
    """

    def __init__(
        self,
        model_dir: Path,
        config: dict[str, Any] | None,
        workdir: Path,
        trust: Path | None = None,
        workers: int = 1,
        grpc: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port() if grpc else 0
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.log_path = workdir / f"server-{self.port}.log"
        config_path = workdir / f"server-{self.port}.yaml"
        config_path.write_text(yaml.safe_dump({"drainSeconds": 0, **(config or {})}))
        args = [sys.executable, "-c", "from modeldeploy.cli import main; main()", "serve", str(model_dir)]
        trusted = ["--trust", str(trust)] if trust else ["--public-key", str(PUBLIC_KEY[0])]
        args += ["--config", str(config_path), *trusted]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        env = {**os.environ, "MODELDEPLOY_GRPC_PORT": str(self.grpc_port)}
        self.metrics_dir = workdir / f"metrics-{self.port}"
        if workers > 1:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(args, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def workers(self) -> list[int]:
        """The pids of the server's worker processes (its children)."""
        tasks = Path(f"/proc/{self.process.pid}/task")
        return sorted(int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split())

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited: {self.logs()}"
            try:
                httpx.get(f"{self.url}/api/health", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"server did not listen within {timeout}s: {self.logs()}")

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/api/health/startup").status_code != 200:
            assert time.monotonic() < deadline, f"model did not load: {self.logs()}"
            time.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as the kubelet sends; returns the exit code."""
        code = stop_child(self.process)
        self.log.close()
        return code
