"""``make demo`` end to end: it tells the whole story, succeeds, and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
from kubernetes import client

from modeldeploy import demo
from modeldeploy.cluster_demo import NAMESPACE, NODE

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


def netns() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if re.match(r"md[0-9a-f]{6}-", line)}


def test_demo_serves_refuses_tampering_and_cleans_up(devcluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    before = netns()
    assert demo.main() == 0
    out = capsys.readouterr().out
    for expected in ("SignatureValid", "-> setosa", "-> virginica", "FilesDiffer", "0 failed", "demo passed"):
        assert expected in out, expected
    with devcluster.api_client() as api:
        core = client.CoreV1Api(api)
        namespaces = [n.metadata.name for n in core.list_namespace().items]
        phase = next((n.status.phase for n in core.list_namespace().items if n.metadata.name == NAMESPACE), None)
        assert NAMESPACE not in namespaces or phase == "Terminating"
        assert NODE not in [n.metadata.name for n in core.list_node().items]
    assert not any(h.name == f"node-{NODE}" for h in devcluster.handles())
    assert not netns() - before, "a pod network namespace was left behind"
