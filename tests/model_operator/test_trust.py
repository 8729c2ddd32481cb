"""Which signers a ModelDeployment must be signed by: policy selection, resolution and the decision."""

from __future__ import annotations

from typing import Any

import pytest

from model_operator.trust import ResolvedPolicy, decide, parse_policy, resolve_policy, selecting
from modeldeploy.contract.spec import parse_spec
from modeldeploy.contract.trust import LabelSelector, MaterialRef

PEM = "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"
ROOTS = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"


def policy(name: str, mode: str = "enforce", selector: dict[str, Any] | None = None,
           material: dict[tuple[str, str], str] | None = None) -> ResolvedPolicy:
    spec = parse_policy(name, {
        "mode": mode,
        "namespaceSelector": selector or {},
        "signers": [
            {"name": "current", "publicKey": {"secretName": "keys", "key": "current.pem"}},
            {"name": "previous", "publicKey": {"secretName": "keys", "key": "previous.pem"}},
            {"name": "pki", "certificate": {"roots": {"configMapName": "roots", "key": "ca.pem"},
                                            "subjects": ["CN=release"]}},
        ],
    })
    found = material if material is not None else {
        ("keys", "current.pem"): PEM, ("keys", "previous.pem"): PEM, ("roots", "ca.pem"): ROOTS}

    def read(ref: MaterialRef) -> str | None:
        return found.get((str(ref.secret_name or ref.config_map_name), ref.key))

    return resolve_policy(name, spec, read)


def md(public_key: bool = True) -> Any:
    parameters: dict[str, Any] = {"source": "s3://models/iris.tar.gz"}
    if public_key:
        parameters["publicKey"] = {"secretName": "iris-key"}
    return parse_spec({"model": {"name": "iris", "version": "1"}, "parameters": parameters})


def test_resolution_counts_keys_and_certificates_and_names_what_is_missing() -> None:
    resolved = policy("prod")
    assert resolved.status(3).model_dump(by_alias=True) == {
        "observedGeneration": 3, "keys": 2, "certificates": 1, "problems": ()}
    partial = policy("prod", material={("keys", "current.pem"): PEM, ("roots", "ca.pem"): "not pem"})
    assert partial.status(1).keys == 1 and partial.status(1).certificates == 0
    assert partial.problems == ("signer previous: Secret/keys key previous.pem not found",
                                "signer pki: ConfigMap/roots key ca.pem holds no PEM")
    assert partial.trust is not None and [s.name for s in partial.trust.signers] == ["current"]


@pytest.mark.parametrize(("selector", "labels", "selected"), [
    ({}, {}, True),
    ({"matchLabels": {"env": "prod"}}, {"env": "prod", "team": "a"}, True),
    ({"matchLabels": {"env": "prod"}}, {"env": "dev"}, False),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]}, {"env": "staging"}, True),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, {}, True),
    ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {"env": "x"}, False),
])
def test_namespace_selector_matches_like_the_api_server(selector: dict[str, Any], labels: dict[str, str],
                                                        selected: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is selected
    assert bool(selecting([policy("p", selector=selector)], labels)) is selected


def test_an_enforcing_policy_decides_and_the_spec_key_is_ignored_with_a_note() -> None:
    decision = decide(md(), [policy("prod"), policy("audit", mode="warn")])
    assert decision.enforced and decision.bundle is not None
    assert [trust.policy for trust in decision.bundle.policies] == ["prod"]
    assert decision.ignored == ["spec.parameters.publicKey is ignored: ModelTrustPolicy prod decides the trusted signers"]


def test_every_enforcing_policy_must_be_satisfied() -> None:
    decision = decide(md(), [policy("prod"), policy("corp")])
    assert decision.bundle is not None and [t.policy for t in decision.bundle.policies] == ["prod", "corp"]


def test_without_an_enforcing_policy_the_spec_key_decides_and_warn_policies_only_warn() -> None:
    decision = decide(md(), [policy("audit", mode="warn")])
    assert decision.bundle is None and not decision.enforced
    assert [p.name for p in decision.warn_only] == ["audit"]


def test_warn_policies_decide_when_the_spec_names_no_key() -> None:
    decision = decide(md(public_key=False), [policy("audit", mode="warn")])
    assert decision.bundle is not None and not decision.enforced and decision.problem is None


def test_no_signer_at_all_is_a_problem_with_a_reason() -> None:
    decision = decide(md(public_key=False), [])
    assert decision.reason == "NoTrustedSigner"
    assert decision.problem is not None and "set spec.parameters.publicKey" in decision.problem


def test_an_enforcing_policy_whose_material_is_missing_refuses_rather_than_falls_back() -> None:
    decision = decide(md(), [policy("prod", material={})])
    assert decision.reason == "TrustPolicyUnresolved" and decision.bundle is None
    assert decision.problem is not None and "Secret/keys key current.pem not found" in decision.problem
