"""`serve --trust trust.json`: the server verifies with the signers of a TrustBundle, as fetch does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from server_support import PUBLIC_KEY, REPO, SETOSA, ServerProcess, app_client, write_trust

from modeldeploy.contract.pod import HEALTH_READY, ReadinessReport
from modeldeploy.params import signing

PREDICT = "/api/models/iris/prediction"


def test_the_server_verifies_with_a_trust_file(
    iris_dir: Path, tmp_path: Path, start_server: Callable[..., ServerProcess],
) -> None:
    trust = write_trust(tmp_path / "trust.json", PUBLIC_KEY[0])
    server = start_server(iris_dir, trust=trust)
    with httpx.Client(base_url=server.url) as client:
        assert client.get(HEALTH_READY).status_code == 200
        assert client.post(PREDICT, json=SETOSA).json()["prediction"] == {"species": "setosa"}
    assert '"trustedBy":"ModelTrustPolicy/release signer public"' in server.logs()


@pytest.mark.parametrize("flags", [[], ["--public-key", "KEY", "--trust", "TRUST"]])
def test_serve_takes_exactly_one_of_public_key_and_trust(iris_dir: Path, tmp_path: Path, flags: list[str]) -> None:
    trust = write_trust(tmp_path / "trust.json", PUBLIC_KEY[0])
    values = {"KEY": str(PUBLIC_KEY[0]), "TRUST": str(trust)}
    command = [sys.executable, "-c", "from modeldeploy.cli import main; main()", "serve", str(iris_dir)]
    result = subprocess.run([*command, *(values.get(flag, flag) for flag in flags)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "give exactly one of --public-key or --trust" in result.stderr


@pytest.mark.anyio
async def test_a_signature_by_nobody_the_trust_names_loads_nothing(iris_dir: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(signing.public_key_pem(signing.generate_key().public_key()))
    async with app_client(iris_dir, public_key=None, trust=write_trust(tmp_path / "trust.json", stranger)) as client:
        report = ReadinessReport.model_validate_json((await client.get(HEALTH_READY)).content)
        assert (report.ready, report.reason) == (False, "UntrustedSigner")
        assert "ModelTrustPolicy release" in report.message


@pytest.mark.anyio
async def test_an_unreadable_trust_file_loads_nothing(iris_dir: Path, tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    trust.write_text('{"policies": []}')
    async with app_client(iris_dir, public_key=None, trust=trust) as client:
        report = ReadinessReport.model_validate_json((await client.get(HEALTH_READY)).content)
        assert (report.ready, report.reason) == (False, "TrustInvalid")
