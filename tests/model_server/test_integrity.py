"""Continuous integrity: the server re-hashes its files every recheckSeconds; a change ends its readiness for good."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_support import SETOSA, app_client

from model_operator.status import integrity_failure
from modeldeploy.contract.api import SPEC_HASH_ANNOTATION
from modeldeploy.contract.pod import HEALTH_READY, ReadinessReport
from modeldeploy.params import signing

pytestmark = pytest.mark.anyio

RECHECK = 0.1
PREDICT = "/api/models/iris/prediction"


def metric(text: str, sample: str) -> float:
    """The value of one sample (`name{labels}`) in a Prometheus text page, 0 if absent."""
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, flags=re.M)
    return float(found[1]) if found else 0.0


async def checks(client: httpx.AsyncClient, result: str) -> float:
    text = (await client.get("/metrics")).text
    return metric(text, f'modeldeploy_integrity_checks_total{{model="iris",result="{result}"}}')


async def wait_until_not_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while (response := await client.get(HEALTH_READY)).status_code == 200:
        assert time.monotonic() < deadline, "readiness never turned 503"
        await asyncio.sleep(RECHECK / 4)
    return response


@pytest.fixture
def served(iris_dir: Path, tmp_path: Path) -> Path:
    """A copy of the signed iris tree this test may tamper with."""
    return Path(shutil.copytree(iris_dir, tmp_path / "iris"))


async def test_a_tampered_file_turns_readiness_503_for_good_naming_it(
    served: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    async with app_client(served, recheck_seconds=RECHECK) as client:
        assert (await client.get(HEALTH_READY)).status_code == 200
        passed_before = await checks(client, "ok")
        artifact = served / "model.joblib"
        original = artifact.read_bytes()
        tampered = bytearray(original)
        tampered[len(tampered) // 2] ^= 0x01
        with caplog.at_level(logging.ERROR, logger="model_server.model"):
            artifact.write_bytes(bytes(tampered))
            response = await wait_until_not_ready(client)
        assert await checks(client, "ok") - passed_before <= 1  # at most one recheck that began before the change
        report = ReadinessReport.model_validate_json(response.content)
        assert (report.ready, report.reason, report.failed_files) == (False, "FilesDiffer", ("model.joblib",))
        assert "model.joblib" in report.message
        assert [r.failedFiles for r in caplog.records if r.levelno == logging.ERROR] == [["model.joblib"]]
        artifact.write_bytes(original)  # putting the file back does not make the server trusted again
        await asyncio.sleep(RECHECK * 5)
        assert (await client.get(HEALTH_READY)).status_code == 503
        assert (await client.get("/api/health")).status_code == 200  # liveness: a restart would not help
        text = (await client.get("/metrics")).text
        assert metric(text, 'modeldeploy_parameters_verified{model="iris"}') == 0.0
        assert metric(text, 'modeldeploy_model_ready{model="iris"}') == 0.0
        assert await checks(client, "failed") == 1.0


async def test_an_untouched_tree_stays_ready_across_rechecks(served: Path) -> None:
    async with app_client(served, recheck_seconds=RECHECK) as client:
        deadline = time.monotonic() + 30
        while await checks(client, "ok") < 3:
            assert time.monotonic() < deadline, "the rechecks did not run"
            await asyncio.sleep(RECHECK)
        assert (await client.get(HEALTH_READY)).status_code == 200
        text = (await client.get("/metrics")).text
        assert metric(text, 'modeldeploy_parameters_verified{model="iris"}') == 1.0
        assert await checks(client, "failed") == 0.0


async def test_no_recheck_runs_when_recheck_seconds_is_zero(served: Path) -> None:
    async with app_client(served) as client:
        (served / "model.joblib").write_bytes(b"tampered")
        await asyncio.sleep(0.3)
        assert (await client.get(HEALTH_READY)).status_code == 200
        assert await checks(client, "ok") == await checks(client, "failed") == 0.0


async def test_a_slow_recheck_does_not_block_requests(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashing = threading.Event()
    began: list[float] = []
    recheck = signing.VerifiedTree.recheck

    def slow_recheck(tree: signing.VerifiedTree) -> None:
        began.append(time.monotonic())
        hashing.set()
        time.sleep(2.0)
        recheck(tree)

    monkeypatch.setattr(signing.VerifiedTree, "recheck", slow_recheck)
    async with app_client(served, recheck_seconds=RECHECK) as client:
        await asyncio.to_thread(hashing.wait, 30)
        assert (await client.get(HEALTH_READY)).status_code == 200
        assert (await client.post(PREDICT, json=SETOSA)).status_code == 200
        assert time.monotonic() - began[0] < 1.0  # answered while the first recheck still hashes (2 s)


async def test_the_operator_reads_the_readiness_report_as_parameters_verified_false(served: Path) -> None:
    async with app_client(served, recheck_seconds=RECHECK) as client:
        (served / "model.yaml").write_text((served / "model.yaml").read_text() + "\n")
        report = ReadinessReport.model_validate_json((await wait_until_not_ready(client)).content)
    pod = {"metadata": {"name": "iris-1", "annotations": {SPEC_HASH_ANNOTATION: "h"}}}
    result = integrity_failure([pod], "h", {"iris-1": report})
    assert result is not None and result.record is not None
    assert (result.status, result.reason, result.record.failed_files) == ("False", "FilesDiffer", ("model.yaml",))
