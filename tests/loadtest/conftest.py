"""Fixtures: the iris example served by the real `modeldeploy serve` on a loopback port.

The parameters directory is trained by examples/iris/train.py, then signed, verified and
given its verified manifest through `modeldeploy.params.signing`, as `modeldeploy fetch` leaves it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from devcluster.ports import free_port
from modeldeploy.params import signing

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """A function returning a loopback port nobody listens on (yet)."""
    return free_port


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("iris")
    model_dir = work / "model"
    subprocess.run(
        [sys.executable, str(REPO / "examples/iris/train.py"), str(model_dir)], check=True, capture_output=True
    )
    key = signing.generate_key()
    (work / "private.pem").write_bytes(signing.private_key_pem(key))
    (work / "public.pem").write_bytes(signing.public_key_pem(key.public_key()))
    signing.seal(model_dir, work / "private.pem", work / "public.pem")
    return model_dir


@pytest.fixture(scope="session")
def iris_url(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`modeldeploy serve` of the iris model on 127.0.0.1, once the model has loaded."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from modeldeploy.cli import main; main()",
                "serve",
                str(iris_dir),
                "--public-key",
                str(iris_dir.parent / "public.pem"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, f"model did not load: {log_path.read_text()}"
                try:
                    if httpx.get(f"{url}/api/health/startup", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
