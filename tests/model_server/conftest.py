"""Fixtures for the model server: signed model directories of every flavor, and servers.

Every directory is signed and verified through `modeldeploy.params.signing`; the servers
verify model.sig again with the session's public key (`server_support.PUBLIC_KEY`).
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
import yaml
from server_support import PUBLIC_KEY, REPO, SETOSA, ServerProcess

from devcluster.iris import write_keys
from modeldeploy.contract.pod import SIGNED_POLICIES
from modeldeploy.params import signing

sys.path.insert(0, str(REPO / "examples" / "iris"))

import train as iris_train


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    keys = write_keys(tmp_path_factory.mktemp("keys"))
    PUBLIC_KEY[:] = [keys.public]
    return keys.private, keys.public


@pytest.fixture(scope="session")
def seal(signing_keys: tuple[Path, Path]) -> Callable[[Path], Path]:
    """Sign a directory and verify it (what `fetch` leaves; the server re-verifies model.sig)."""
    private, public = signing_keys

    def _seal(model_dir: Path) -> Path:
        signing.seal(model_dir, private, public)
        return model_dir

    return _seal


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory: pytest.TempPathFactory, seal: Callable[[Path], Path]) -> Path:
    return seal(iris_train.train(tmp_path_factory.mktemp("iris") / "model"))


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory, iris_dir: Path, seal: Callable[[Path], Path]) -> Path:
    from skl2onnx import to_onnx

    model_dir = tmp_path_factory.mktemp("iris-onnx") / "model"
    model_dir.mkdir()
    pipeline = joblib.load(iris_dir / "model.joblib")
    sample = [[SETOSA[f] for f in iris_train.FEATURES]]
    import numpy as np

    onnx_model = to_onnx(pipeline, np.array(sample, dtype=np.float32), options={"zipmap": False})
    (model_dir / "model.onnx").write_bytes(onnx_model.SerializeToString())
    card = yaml.safe_load((iris_dir / "model.yaml").read_text())
    card.update(name="iris-onnx", flavor="onnx", artifact="model.onnx")
    (model_dir / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return seal(model_dir)


PRICING_CARD = {
    "name": "pricing",
    "version": "0.1.0",
    "flavor": "python",
    "entrypoint": "{module}:PricingModel",
    "inputs": [
        {"name": "age", "type": "integer", "minimum": 0, "maximum": 130, "example": 40},
        {"name": "smoker", "type": "boolean", "example": False},
        {"name": "cost", "type": "number", "minimum": 0.0, "example": 100.0},
    ],
    "outputs": [{"name": "price", "type": "number", "description": "quoted price"}],
}

PRICING_CODE = """
import time


class PricingModel:
    def load(self, model_dir):
        time.sleep({load_seconds})
        if {fail_load}:
            raise RuntimeError("weights are corrupt")

    def predict(self, inputs):
        time.sleep({predict_seconds})
        return [{{"price": row["cost"] * 1.5 - row["age"] * 2.0 - (50.0 if row["smoker"] else 0.0)}} for row in inputs]
"""


@pytest.fixture
def pricing_dir(tmp_path: Path, seal: Callable[[Path], Path]) -> Callable[..., Path]:
    """A python-flavor model: price = 1.5 * cost - 2 * age - (50 if smoker); load/predict can be slow or fail.

    `signed_policies` is signed with it as the tree's policies.yaml (YAML text, or a policy list).
    """

    def _make(
        load_seconds: float = 0.0,
        predict_seconds: float = 0.0,
        fail_load: bool = False,
        signed_policies: str | list[dict[str, Any]] | None = None,
    ) -> Path:
        module = f"pricing_{os.urandom(4).hex()}"
        model_dir = tmp_path / module
        model_dir.mkdir()
        code = PRICING_CODE.format(load_seconds=load_seconds, predict_seconds=predict_seconds, fail_load=fail_load)
        (model_dir / f"{module}.py").write_text(textwrap.dedent(code))
        card = {**PRICING_CARD, "entrypoint": f"{module}:PricingModel"}
        (model_dir / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        if isinstance(signed_policies, list):
            signed_policies = yaml.safe_dump({"policies": signed_policies})
        if signed_policies is not None:
            (model_dir / SIGNED_POLICIES).write_text(signed_policies)
        return seal(model_dir)

    return _make


# in-process tests use anyio's pytest plugin on asyncio
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def _start(
        model_dir: Path,
        config: dict[str, Any] | None = None,
        wait: str = "started",
        trust: Path | None = None,
        workers: int = 1,
        grpc: bool = False,
    ) -> ServerProcess:
        server = ServerProcess(model_dir, config, tmp_path, trust, workers, grpc)
        servers.append(server)
        server.wait_listening()
        if wait == "started":
            server.wait_started()
        return server

    yield _start
    for server in servers:
        server.stop()
