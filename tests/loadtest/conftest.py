"""Fixtures: the iris example served by the real `modeldeploy serve` on loopback ports.

`iris_url` and its `twin_url` answer alike; `setosa_url` and `reject_url` serve the same
parameters with a server config whose policy overrides, or rejects, every prediction.

The parameters directory is trained by examples/iris/train.py, then signed, verified and
given its verified manifest through `modeldeploy.params.signing`, as `modeldeploy fetch` leaves it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

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


@contextmanager
def serving(iris_dir: Path, work: Path, policies: list[dict[str, Any]] | None = None) -> Iterator[str]:
    """`modeldeploy serve` of the iris model on 127.0.0.1 (with these server-config policies), once loaded."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options = []
    if policies is not None:
        config = work / "server.yaml"
        config.write_text(yaml.safe_dump({"policies": policies}))
        options = ["--config", str(config)]
    log_path = work / "server.log"
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
                *options,
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


@pytest.fixture(scope="session")
def iris_url(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`modeldeploy serve` of the iris model on 127.0.0.1, once the model has loaded."""
    with serving(iris_dir, tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="session")
def twin_url(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second server of the same model, answering as `iris_url` does."""
    with serving(iris_dir, tmp_path_factory.mktemp("twin")) as url:
        yield url


@pytest.fixture(scope="session")
def setosa_url(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same model behind a policy that overrides every prediction to setosa."""
    policy = {"name": "always-setosa", "when": "true", "action": "override", "value": "setosa"}
    with serving(iris_dir, tmp_path_factory.mktemp("setosa"), [policy]) as url:
        yield url


@pytest.fixture(scope="session")
def reject_url(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same model behind a policy that rejects every prediction."""
    policy = {"name": "reject-all", "when": "true", "action": "reject", "message": "closed"}
    with serving(iris_dir, tmp_path_factory.mktemp("reject"), [policy]) as url:
        yield url
