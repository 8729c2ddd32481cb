"""Parsing the spec: defaults, aliases and readable errors."""

from __future__ import annotations

import pytest

from modeldeploy.contract.spec import SpecError, parse_spec

MINIMAL = {
    "model": {"name": "iris", "version": "1.0.0"},
    "parameters": {"source": "file:///mnt/params/iris", "publicKey": {"secretName": "k"}},
}


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.replicas == 1
    assert spec.parameters.public_key.key == "public.pem"
    assert spec.probes.max_load_seconds == 120
    assert (spec.service.port, spec.service.type) == (80, "ClusterIP")
    assert spec.autoscaling is None and spec.policies == () and spec.image is None


def test_errors_name_every_offending_field() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**MINIMAL, "replicas": -2, "service": {"type": "Ingress"}})
    message = str(err.value)
    assert "spec.replicas" in message and "spec.service.type" in message


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(SpecError, match="spec.replica"):
        parse_spec({**MINIMAL, "replica": 2})


def test_duplicate_policy_names_are_rejected() -> None:
    policy = {"name": "p", "when": "true", "action": "reject"}
    with pytest.raises(SpecError, match="unique"):
        parse_spec({**MINIMAL, "policies": [policy, policy]})


def test_resource_quantities_may_be_integers() -> None:
    spec = parse_spec({**MINIMAL, "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}})
    assert spec.resources.model_dump(exclude_none=True) == {"limits": {"cpu": 1, "memory": "1Gi"}}


def test_a_malformed_quantity_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.resources\.limits\.memory"):
        parse_spec({**MINIMAL, "resources": {"limits": {"memory": "lots"}}})
