"""`kubectl apply` against the real API server: the generated CRD refuses what the server would refuse.

Before the contract, these policies were admitted, rendered by the operator and refused by the
model server at start, so the user saw crash-looping pods. Now the API server says why at once;
the rules CEL cannot check (an untyped `value`) are the operator's: see test_operator's SpecInvalid test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.cluster import Cluster
from devcluster.localrun import WEBHOOKS
from modeldeploy.contract import api, trust

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def crd_installed(devcluster: Cluster) -> None:
    """Only the CRDs: the operator's webhooks (left by an earlier install) are removed, so the schema answers."""
    devcluster.kubectl_run("delete", "--ignore-not-found", f"mutatingwebhookconfiguration/{WEBHOOKS}",
                           f"validatingwebhookconfiguration/{WEBHOOKS}")
    devcluster.kubectl_run("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    devcluster.kubectl_run("wait", "--for=condition=Established", f"crd/{api.CRD_NAME}",
                           f"crd/{trust.TRUST_PLURAL}.{api.GROUP}", "--timeout=60s")


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
    result = devcluster.kubectl_run("apply", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert devcluster.kubectl_run("-n", namespace, "get", "md", "iris", check=False).returncode != 0  # nothing stored


def test_an_override_to_null_is_stored_as_written(devcluster: Cluster, crd_installed: None, namespace: str) -> None:
    to_null = {"name": "p", "when": "true", "action": "override", "value": None}
    manifest = model_deployment(namespace, policies=[to_null])
    created = devcluster.kubectl_run("create", "-f", "-", stdin=manifest, check=False)
    assert created.returncode == 0, created.stderr
    stored = json.loads(devcluster.kubectl_run("-n", namespace, "get", "md", "iris", "-o", "json").stdout)
    assert stored["spec"]["policies"] == [to_null]


def test_a_misspelt_field_is_refused_by_strict_field_validation(
    devcluster: Cluster, crd_installed: None, namespace: str,
) -> None:
    result = devcluster.kubectl_run("apply", "-f", "-", stdin=model_deployment(namespace, replica=2), check=False)
    assert result.returncode != 0 and 'unknown field "spec.replica"' in result.stderr, result.stderr


@pytest.mark.parametrize(("signer", "message"), [
    ({"name": "both", "publicKey": {"secretName": "k", "key": "a.pem"},
      "certificate": {"roots": {"secretName": "k", "key": "ca.pem"}}}, "a signer is exactly one of publicKey or certificate"),
    ({"name": "neither"}, "a signer is exactly one of publicKey or certificate"),
    ({"name": "two-sources", "publicKey": {"secretName": "k", "configMapName": "c", "key": "a.pem"}},
     "name exactly one of secretName or configMapName"),
])
def test_a_trust_policy_signer_is_exactly_one_kind_from_exactly_one_source(
    devcluster: Cluster, crd_installed: None, signer: dict[str, Any], message: str,
) -> None:
    policy = {"apiVersion": api.API_VERSION, "kind": trust.TRUST_KIND, "metadata": {"name": "refused"},
              "spec": {"mode": "enforce", "signers": [signer]}}
    result = devcluster.kubectl_run("apply", "-f", "-", stdin=yaml.safe_dump(policy), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
