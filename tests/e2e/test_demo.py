"""``make demo`` end to end on the real node: it tells the whole story, succeeds, and removes what it made."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from devcluster import demo
from devcluster.cluster_demo import NAMESPACE

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]


def test_demo_serves_refuses_tampering_and_cleans_up(devcluster: Any, node: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main() == 0
    out = capsys.readouterr().out
    for expected in ("SignatureValid", "-> setosa", "-> virginica", "svc.cluster.local", "verified, signed by",
                     "FilesDiffer", "0 failed", "demo passed"):
        assert expected in out, expected
    with devcluster.api_client() as api:
        phases = {n.metadata.name: n.status.phase for n in client.CoreV1Api(api).list_namespace().items}
    assert phases.get(NAMESPACE, "Terminating") == "Terminating"
