"""`kubectl apply` against the real API server: the generated CRD refuses what the server would refuse.

Before the contract, these policies were admitted, rendered by the operator and refused by the
model server at start, so the user saw crash-looping pods. Now the API server says why at once;
the rules CEL cannot check (an untyped `value`) are the operator's: see test_operator's SpecInvalid test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.cluster import Cluster
from modeldeploy.contract import api

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cluster.kubectl), "--kubeconfig", str(cluster.admin_kubeconfig), *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def crd_installed(devcluster: Cluster) -> None:
    applied = kubectl(devcluster, "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    assert applied.returncode == 0, applied.stderr
    established = kubectl(devcluster, "wait", "--for=condition=Established", f"crd/{api.CRD_NAME}", "--timeout=60s")
    assert established.returncode == 0, established.stderr


def model_deployment(namespace: str, **spec: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "iris", "namespace": namespace},
        "spec": {
            "model": {"name": "iris", "version": "1.0.0"},
            "parameters": {"source": "s3://models/iris/", "publicKey": {"secretName": "key"}},
            **spec,
        },
    })


REFUSED = {
    "reject-with-field": ({"action": "reject", "field": "species"}, "a reject policy takes no field"),
    "clamp-with-expression": ({"action": "clamp", "min": 0, "expression": "1.0"},
                              "value and expression apply to override only"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_policies_the_server_refuses_are_refused_at_apply(
    devcluster: Cluster, crd_installed: None, namespace: str, case: str,
) -> None:
    policy, message = REFUSED[case]
    manifest = model_deployment(namespace, policies=[{"name": "p", "when": "true", **policy}])
    result = kubectl(devcluster, "apply", "-f", "-", stdin=manifest)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert kubectl(devcluster, "-n", namespace, "get", "md", "iris").returncode != 0  # nothing stored


def test_an_override_to_null_is_stored_as_written(devcluster: Cluster, crd_installed: None, namespace: str) -> None:
    manifest = model_deployment(namespace, policies=[{"name": "p", "when": "true", "action": "override", "value": None}])
    created = kubectl(devcluster, "create", "-f", "-", stdin=manifest)
    assert created.returncode == 0, created.stderr
    stored = json.loads(kubectl(devcluster, "-n", namespace, "get", "md", "iris", "-o", "json").stdout)
    assert stored["spec"]["policies"] == [{"name": "p", "when": "true", "action": "override", "value": None}]


def test_a_misspelt_field_is_refused_by_strict_field_validation(
    devcluster: Cluster, crd_installed: None, namespace: str,
) -> None:
    result = kubectl(devcluster, "apply", "-f", "-", stdin=model_deployment(namespace, replica=2))
    assert result.returncode != 0 and 'unknown field "spec.replica"' in result.stderr, result.stderr
