"""Fixtures: the iris example served by the real `modeldeploy serve` on a loopback port.

The parameters directory is trained by examples/iris/train.py, then signed, verified and
given its verified manifest through `modeldeploy.params.signing`, as `modeldeploy fetch` leaves it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devcluster.child import stop_child, wait_answering
from devcluster.iris import sealed
from devcluster.ports import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """A function returning a loopback port nobody listens on (yet)."""
    return free_port


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir, _ = sealed(tmp_path_factory.mktemp("iris"))
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
            wait_answering(f"{url}/api/health/startup", process, log_path, interval=0.05, name="modeldeploy serve")
            yield url
        finally:
            stop_child(process, signal.SIGINT)
