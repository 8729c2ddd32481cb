"""The CRD offline: structural schema, defaults, CEL rules and agreement with the pydantic spec.

The API server is the real judge (tests/operator_integration applies the CRD to it); here the
schema is walked and evaluated with jsonschema and Google's CEL runtime (cel-expr-python) so
mistakes show up without a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext.ext_strings import ExtStrings
import jsonschema_rs
import pydantic
import pytest
import yaml

from modeldeploy.contract import api, crd
from modeldeploy.contract import spec as spec_module
from modeldeploy.contract.spec import Policy, SpecError, parse_spec

ROOT = Path(__file__).parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "modeldeployment.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server does it: fill absent properties, recurse."""
    if isinstance(obj, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in obj and "default" in child:
                obj[name] = copy.deepcopy(child["default"])
            if name in obj:
                obj[name] = apply_defaults(child, obj[name])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in obj]
    return obj


def cel_environment() -> cel.Env:
    """CEL as the API server gives it to x-kubernetes-validations rules (`self`, the strings library)."""
    return cel.NewEnv(variables={"self": cel.Type.DYN}, extensions=[ExtStrings()])


def cel_failures(schema: dict[str, Any], obj: Any) -> list[str]:
    """Messages of the x-kubernetes-validations rules that `obj` breaks (a rule that errs breaks)."""
    env = cel_environment()
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        result = env.compile(rule["rule"]).eval(data={"self": obj})
        if result.type() == cel.Type.ERROR:
            failures.append(f"{rule['message']} ({result})")
        elif result.value() is not True:
            failures.append(rule["message"])
    if isinstance(obj, dict):
        for name, child in schema.get("properties", {}).items():
            if name in obj:
                failures += cel_failures(child, obj[name])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            failures += cel_failures(schema["items"], item)
    return failures


def admit(spec: dict[str, Any]) -> list[str]:
    """What the API server would say about a spec: schema errors, then CEL messages."""
    spec = apply_defaults(SPEC_SCHEMA, copy.deepcopy(spec))
    errors = [error.message for error in jsonschema_rs.Draft4Validator(SPEC_SCHEMA).iter_errors(spec)]
    return errors or cel_failures(SPEC_SCHEMA, spec)


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "model": {"name": "iris", "version": "1.0.0"},
        "parameters": {"source": "s3://models/iris/", "publicKey": {"secretName": "k"}},
        **extra,
    }


def test_crd_names_match_the_api() -> None:
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert (CRD["spec"]["group"], VERSION["name"]) == (api.GROUP, api.VERSION)
    assert (names["kind"], names["plural"], names["shortNames"]) == (api.KIND, api.PLURAL, list(api.SHORT_NAMES))


def test_schema_is_structural() -> None:
    for path, node in nodes(SCHEMA):
        assert "$ref" not in node, path
        extension = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        assert "type" in node or extension, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_every_spec_field_has_a_description_for_kubectl_explain() -> None:
    for name, node in SPEC_SCHEMA["properties"].items():
        assert node.get("description"), f"spec.{name}"


def test_status_and_scale_subresources() -> None:
    assert VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns_show_model_ready_verified_signer_rollout_age() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"] if c.get("priority", 0) == 0}
    assert list(columns) == ["Model", "Version", "Ready", "Verified", "Signer", "Status", "Rollout", "Age"]
    assert columns["Rollout"]["jsonPath"] == ".status.rollout.phase"
    assert columns["Verified"]["jsonPath"] == '.status.conditions[?(@.type=="ParametersVerified")].status'
    assert columns["Signer"]["jsonPath"] == ".status.verification.signer"


def test_trust_policy_is_cluster_scoped_and_shows_mode_and_signer_counts() -> None:
    definition = crd.trust_crd()
    assert definition["spec"]["scope"] == "Cluster"
    columns = [c["name"] for c in definition["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:3] == ["Mode", "Keys", "Certificates"]


def test_every_cel_rule_compiles() -> None:
    env = cel_environment()
    rules = [rule["rule"] for _, node in nodes(SCHEMA) for rule in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 5
    for rule in rules:
        env.compile(rule)


def test_iris_example_is_admitted() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples/iris/modeldeployment.yaml").read_text()) if d]
    example = next(d for d in docs if d["kind"] == "ModelDeployment")
    assert example["apiVersion"] == api.API_VERSION
    assert admit(example["spec"]) == []
    parse_spec(example["spec"])


def test_defaults_match_the_pydantic_spec() -> None:
    defaulted = apply_defaults(SPEC_SCHEMA, minimal())
    assert defaulted["replicas"] == 1
    assert defaulted["parameters"]["publicKey"]["key"] == "public.pem"
    assert defaulted["probes"] == {"maxLoadSeconds": 120, "periodSeconds": 5, "grpcReadiness": False}
    assert defaulted["service"] == {"port": 80, "grpcPort": 9000, "type": "ClusterIP"}
    assert defaulted["protocols"] == ["rest"]
    parsed = parse_spec(minimal())
    assert parse_spec(defaulted) == parsed


INVALID = {
    "min-over-max": (
        minimal(autoscaling={"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilization": 50}),
        "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
    ),
    "no-scaling-metric": (minimal(autoscaling={"maxReplicas": 2}), "autoscaling needs targetCPUUtilization or metric"),
    "clamp-without-bounds": (
        minimal(policies=[{"name": "p", "when": "true", "action": "clamp"}]), "a clamp policy needs min and/or max",
    ),
    "bad-source-scheme": (
        minimal(parameters={"source": "ftp://x", "publicKey": {"secretName": "k"}}),
        "source must be an s3://, https://, http:// or file:/// URI",
    ),
    "bad-action": (minimal(policies=[{"name": "p", "when": "true", "action": "explode"}]), "explode"),
    "bad-sha256": (minimal(parameters={"source": "s3://x", "publicKey": {"secretName": "k"}, "sha256": "xyz"}), "xyz"),
    "negative-replicas": (minimal(replicas=-1), "-1"),
    "grpc-without-rest": (minimal(protocols=["grpc"]), "protocols must include rest"),
    "grpc-readiness-without-grpc": (minimal(probes={"grpcReadiness": True}), "probes.grpcReadiness needs grpc"),
    "grpc-on-the-rest-port": (minimal(protocols=["rest", "grpc"], service={"port": 9000}),
                              "service.port and service.grpcPort must differ"),
    # The three policies the operator once accepted and the server refused (crash-looping pods).
    "reject-with-field": (
        minimal(policies=[{"name": "p", "when": "true", "action": "reject", "field": "species"}]),
        "a reject policy takes no field",
    ),
    "clamp-with-expression": (
        minimal(policies=[{"name": "p", "when": "true", "action": "clamp", "min": 0, "expression": "1.0"}]),
        "value and expression apply to override only",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_specs_are_rejected_by_crd_and_pydantic(case: str) -> None:
    spec, message = INVALID[case]
    assert any(message in problem for problem in admit(spec)), admit(spec)
    with pytest.raises(SpecError):
        parse_spec(spec)


@pytest.mark.parametrize("policy", [
    {"name": "p", "when": "true", "action": "override", "value": None, "expression": "1"},
    {"name": "p", "when": "true", "action": "override"},
    {"name": "p", "when": "true", "action": "reject", "value": 1},
])
def test_value_rules_are_the_operators_since_cel_cannot_see_untyped_fields(policy: dict[str, Any]) -> None:
    spec = minimal(policies=[policy])
    assert admit(spec) == []
    with pytest.raises(SpecError, match=r"spec\.policies\.0: Value error, policy 'p': "):
        parse_spec(spec)


@pytest.mark.parametrize("name", sorted(crd.DEFINITIONS))
def test_committed_crds_are_the_generated_ones(name: str) -> None:
    assert (ROOT / "crds" / name).read_text() == crd.render(name), "run `make crds`"
    assert crd.main(["--check", str(ROOT / "crds")]) == 0


@pytest.mark.parametrize("policy", [
    {"name": "p", "action": "override", "value": None},
    {"name": "p", "when": "input.x > 1", "action": "override", "expression": "prediction.y * 2.0"},
    {"name": "p", "action": "clamp", "min": 0.0, "field": "y"},
    {"name": "p", "action": "reject", "message": "no"},
])
def test_valid_policies_pass_the_crd_the_operator_and_the_server_alike(policy: dict[str, Any]) -> None:
    spec = minimal(policies=[policy])
    assert admit(spec) == []
    parsed = parse_spec(spec).policies[0]
    assert Policy.model_validate(parsed.document()) == parsed  # what server.yaml carries, read back


def test_missing_model_is_rejected() -> None:
    spec = minimal()
    del spec["model"]
    assert any("model" in problem for problem in admit(spec))
    with pytest.raises(SpecError, match=r"spec\.model: Field required"):
        parse_spec(spec)


def aliases(model: type[pydantic.BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(("path", "model"), [
    ("", spec_module.ModelDeploymentSpec),
    ("model", spec_module.ModelRef),
    ("parameters", spec_module.Parameters),
    ("parameters.publicKey", spec_module.SecretKeyRef),
    ("parameters.credentials", spec_module.SecretRef),
    ("policies[]", spec_module.Policy),
    ("probes", spec_module.Probes),
    ("autoscaling", spec_module.Autoscaling),
    ("autoscaling.metric", spec_module.CustomMetric),
    ("service", spec_module.ServiceSpec),
])
def test_crd_fields_match_the_pydantic_model(path: str, model: type[pydantic.BaseModel]) -> None:
    node = dict(nodes(SPEC_SCHEMA))["." + path if path else ""]
    assert set(node["properties"]) == aliases(model)
