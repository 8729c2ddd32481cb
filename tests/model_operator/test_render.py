"""Render functions: pure spec -> manifests, checked field by field and against golden files.

Regenerate the golden files with `UPDATE_GOLDEN=1 pytest tests/model_operator`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_operator.render import (
    SPEC_HASH_ANNOTATION,
    ObjectRef,
    render_all,
    render_config_map,
    render_deployment,
    render_hpa,
    render_pdb,
    render_service,
    unwanted_children,
)
from modeldeploy.contract.spec import SpecError, parse_spec
from modeldeploy.contract.trust import PolicyTrust, TrustBundle, TrustedSigner

TESTDATA = Path(__file__).parent / "testdata"
EXAMPLE = Path(__file__).parents[2] / "examples" / "iris" / "modeldeployment.yaml"
REF = ObjectRef("iris", "ml")
IMAGE = "ghcr.io/example/modeldeploy-server:0.1.0"


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "model": {"name": "iris", "version": "1.0.0"},
        "parameters": {"source": "s3://models/iris/1.0.0/", "publicKey": {"secretName": "iris-key"}},
        **extra,
    }


def assert_golden(name: str, manifests: list[dict[str, Any]]) -> None:
    path = TESTDATA / name
    text = yaml.safe_dump_all(manifests, sort_keys=True)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; rerun with UPDATE_GOLDEN=1 if the change is intended"


def example_spec() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "ModelDeployment"]
    return docs[0]["spec"]


def test_iris_example_renders_golden() -> None:
    assert_golden("iris-example.yaml", render_all(parse_spec(example_spec()), REF, IMAGE))


def test_autoscaled_with_everything_renders_golden() -> None:
    spec = parse_spec(minimal(
        image="registry.local/server:2",
        parameters={
            "source": "https://models.example.com/iris-1.0.0.tar.gz",
            "signature": "https://models.example.com/iris-1.0.0.tar.gz.sig",
            "publicKey": {"secretName": "iris-key", "key": "team.pem"},
            "sha256": "a" * 64,
        },
        maxRequestBytes=65536,
        policies=[{"name": "clamp-price", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0}],
        autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60,
                     "metric": {"name": "requests_per_second", "targetAverageValue": "50"}},
        service={"port": 8080, "type": "NodePort"},
        env=[{"name": "LOG_LEVEL", "value": "debug"}],
        nodeSelector={"kubernetes.io/arch": "amd64"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    ))
    assert_golden("autoscaled.yaml", render_all(spec, REF))


def test_children_in_apply_order_with_config_first() -> None:
    kinds = [m["kind"] for m in render_all(parse_spec(minimal(replicas=3)), REF, IMAGE)]
    assert kinds == ["ConfigMap", "Service", "Deployment", "PodDisruptionBudget"]


def test_every_child_carries_app_labels_and_namespace() -> None:
    spec = parse_spec(minimal(replicas=2, autoscaling={"minReplicas": 2, "maxReplicas": 3, "targetCPUUtilization": 50}))
    for manifest in render_all(spec, REF, IMAGE):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "model-server"
        assert labels["app.kubernetes.io/instance"] == "iris"
        assert labels["app.kubernetes.io/managed-by"] == "modeldeploy"
        assert manifest["metadata"]["namespace"] == "ml"


def pod_spec(spec: dict[str, Any]) -> dict[str, Any]:
    return render_deployment(parse_spec(spec), REF, IMAGE)["spec"]["template"]["spec"]


def test_init_container_fetches_and_verifies_per_contract() -> None:
    init = pod_spec(minimal(parameters={
        "source": "s3://b/k/", "signature": "s3://b/k.sig", "sha256": "b" * 64,
        "publicKey": {"secretName": "key", "key": "pub.pem"}, "credentials": {"secretName": "s3"},
    }))["initContainers"][0]
    assert init["command"] == [
        "modeldeploy", "fetch", "s3://b/k/", "--dest", "/var/lib/modeldeploy/model",
        "--public-key", "/etc/modeldeploy/keys/pub.pem", "--termination-log", "/dev/termination-log",
        "--max-bytes", str(10 << 30), "--deadline", "120",
        "--signature-uri", "s3://b/k.sig", "--sha256", "b" * 64,
    ]
    assert init["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert init["terminationMessagePolicy"] == "File"
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert mounts["model"]["mountPath"] == "/var/lib/modeldeploy"
    assert mounts["keys"] == {"name": "keys", "mountPath": "/etc/modeldeploy/keys", "readOnly": True}


def test_public_key_comes_from_the_named_secret_key_only() -> None:
    volumes = {v["name"]: v for v in pod_spec(minimal())["volumes"]}
    assert volumes["keys"]["secret"] == {
        "secretName": "iris-key", "items": [{"key": "public.pem", "path": "public.pem"}],
    }
    assert volumes["model"] == {"name": "model", "emptyDir": {"sizeLimit": str(2 * (10 << 30) + (64 << 20))}}


def test_server_container_serves_the_fetched_model_per_contract() -> None:
    server = pod_spec(minimal())["containers"][0]
    assert server["command"] == [
        "modeldeploy", "serve", "/var/lib/modeldeploy/model", "--config", "/etc/modeldeploy/server.yaml",
        "--public-key", "/etc/modeldeploy/keys/public.pem", "--host", "0.0.0.0", "--port", "8000",
        "--grpc-port", "0",
    ]
    assert [p["name"] for p in server["ports"]] == ["http"], "no gRPC unless spec.protocols asks"
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["model"]["readOnly"] is True
    assert mounts["keys"] == {"name": "keys", "mountPath": "/etc/modeldeploy/keys", "readOnly": True}


def test_fetch_is_bounded_by_the_spec_size_and_load_deadline_and_the_volume_by_its_size() -> None:
    pod = pod_spec(minimal(
        parameters={"source": "s3://b/k/", "publicKey": {"secretName": "key"}, "maxBytes": 1 << 30},
        probes={"maxLoadSeconds": 300},
    ))
    command = pod["initContainers"][0]["command"]
    assert command[command.index("--max-bytes") + 1] == str(1 << 30)
    assert command[command.index("--deadline") + 1] == "300"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["emptyDir"] == {"sizeLimit": str((2 << 30) + (64 << 20))}


def test_grpc_is_served_exposed_and_optionally_probed_when_the_spec_asks() -> None:
    spec = parse_spec(minimal(protocols=["rest", "grpc"], probes={"grpcReadiness": True}, service={"grpcPort": 8001}))
    server = pod_spec(minimal(protocols=["rest", "grpc"], probes={"grpcReadiness": True}))["containers"][0]
    assert server["command"][server["command"].index("--grpc-port") + 1] == "9000"
    assert {"name": "grpc", "containerPort": 9000, "protocol": "TCP"} in server["ports"]
    assert server["readinessProbe"]["grpc"] == {"port": 9000, "service": ""}
    assert server["livenessProbe"]["httpGet"]["path"] == "/api/health", "liveness stays HTTP: not ready is not dead"
    ports = {p["name"]: p for p in render_service(spec, REF)["spec"]["ports"]}
    assert ports["grpc"] == {"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP",
                             "appProtocol": "kubernetes.io/h2c"}
    assert ports["http"]["port"] == 80


def test_startup_probe_sized_from_max_load_seconds() -> None:
    server = pod_spec(minimal(probes={"maxLoadSeconds": 301, "periodSeconds": 10}))["containers"][0]
    startup = server["startupProbe"]
    assert startup["httpGet"] == {"path": "/api/health/startup", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 301
    assert startup["failureThreshold"] == 31
    assert server["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/api/health"


def test_every_container_runs_restricted() -> None:
    pod = pod_spec(minimal())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True


def test_rolling_update_never_removes_serving_pods() -> None:
    strategy = render_deployment(parse_spec(minimal()), REF, IMAGE)["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def spec_hash(spec: dict[str, Any]) -> str:
    template = render_deployment(parse_spec(spec), REF, IMAGE)["spec"]["template"]
    return template["metadata"]["annotations"][SPEC_HASH_ANNOTATION]


def test_spec_hash_changes_with_policies_parameters_and_image() -> None:
    base = spec_hash(minimal())
    policy = {"name": "p", "when": "true", "action": "reject"}
    assert spec_hash(minimal(policies=[policy])) != base
    assert spec_hash(minimal(parameters={"source": "s3://other/", "publicKey": {"secretName": "iris-key"}})) != base
    assert spec_hash(minimal(image="other:1")) != base
    assert spec_hash(minimal()) == base


def test_spec_hash_ignores_replicas_and_service() -> None:
    assert spec_hash(minimal(replicas=5, service={"port": 9000})) == spec_hash(minimal())


def test_deployment_leaves_replicas_to_the_hpa_when_autoscaling() -> None:
    spec = minimal(autoscaling={"maxReplicas": 4, "targetCPUUtilization": 70})
    assert "replicas" not in render_deployment(parse_spec(spec), REF, IMAGE)["spec"]
    assert render_deployment(parse_spec(minimal(replicas=3)), REF, IMAGE)["spec"]["replicas"] == 3


def test_missing_image_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="spec.image"):
        render_deployment(parse_spec(minimal()), REF, None)


def test_service_targets_the_server_port_by_name() -> None:
    service = render_service(parse_spec(minimal(service={"port": 8080, "type": "LoadBalancer"})), REF)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "model-server", "app.kubernetes.io/instance": "iris"}


def test_config_map_holds_server_yaml_per_contract() -> None:
    policies = [
        {"name": "no-negative-price", "when": "prediction.price < 0.0", "action": "clamp", "field": "price", "min": 0.0},
        {"name": "no-smoker-over-60", "when": "input.smoker && input.age > 60", "action": "reject",
         "message": "Prediction cannot be made for a smoker over 60."},
        {"name": "unknown-to-default", "when": "prediction.species == 'virginica'", "action": "override",
         "value": "versicolor"},
    ]
    config_map = render_config_map(parse_spec(minimal(policies=policies, maxRequestBytes=1048576)), REF)
    assert config_map["metadata"]["name"] == "iris-config"
    assert yaml.safe_load(config_map["data"]["server.yaml"]) == {
        "maxRequestBytes": 1048576, "recheckSeconds": 300.0, "policies": policies,
    }


def test_config_map_without_policies_has_an_empty_list() -> None:
    server_yaml = yaml.safe_load(render_config_map(parse_spec(minimal()), REF)["data"]["server.yaml"])
    assert server_yaml["policies"] == []


def test_recheck_seconds_reach_the_server() -> None:
    spec = parse_spec(minimal(verification={"recheckSeconds": 0}))
    assert yaml.safe_load(render_config_map(spec, REF)["data"]["server.yaml"])["recheckSeconds"] == 0


TRUST = TrustBundle(policies=(PolicyTrust(policy="prod", signers=(
    TrustedSigner(name="release", public_key_pem="-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"),
)),))


def _commands(deployment: dict[str, Any]) -> tuple[list[str], list[str]]:
    pod = deployment["spec"]["template"]["spec"]
    return pod["initContainers"][0]["command"], pod["containers"][0]["command"]


def test_a_trust_policy_puts_trust_json_in_the_config_map_and_both_containers_verify_with_it() -> None:
    spec = parse_spec(minimal())
    config_map = render_config_map(spec, REF, TRUST)
    assert TrustBundle.model_validate_json(config_map["data"]["trust.json"]) == TRUST
    deployment = render_deployment(spec, REF, "server:1", TRUST)
    for command in _commands(deployment):
        assert command[command.index("--trust") + 1] == "/etc/modeldeploy/trust.json"
        assert "--public-key" not in command
    pod = deployment["spec"]["template"]["spec"]
    assert "keys" not in {volume["name"] for volume in pod["volumes"]}  # the spec's key Secret is not mounted
    for container in [*pod["initContainers"], *pod["containers"]]:
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/modeldeploy/trust.json")
        assert mount == {"name": "config", "mountPath": "/etc/modeldeploy/trust.json", "subPath": "trust.json",
                         "readOnly": True}


def test_a_trust_change_rolls_the_pods() -> None:
    spec = parse_spec(minimal())
    annotation = "modeldeploy.io/spec-hash"
    extra = TrustedSigner(name="next", public_key_pem="-----BEGIN PUBLIC KEY-----\nAB==\n-----END PUBLIC KEY-----\n")
    rotated = TrustBundle(policies=(PolicyTrust(policy="prod", signers=(*TRUST.policies[0].signers, extra)),))
    hashes = {render_deployment(spec, REF, "server:1", trust)["spec"]["template"]["metadata"]["annotations"][annotation]
              for trust in (None, TRUST, rotated)}
    assert len(hashes) == 3


def test_no_trust_policy_and_no_public_key_is_a_spec_error() -> None:
    spec = minimal()
    del spec["parameters"]["publicKey"]
    with pytest.raises(SpecError, match="no signer to verify with"):
        render_deployment(parse_spec(spec), REF, "server:1")
    assert render_deployment(parse_spec(spec), REF, "server:1", TRUST)


def test_pdb_omitted_for_single_replica() -> None:
    assert render_pdb(parse_spec(minimal(replicas=1)), REF) is None
    pdb = render_pdb(parse_spec(minimal(replicas=2)), REF)
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1


def test_pdb_follows_the_autoscaling_floor() -> None:
    spec = minimal(replicas=5, autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 70})
    assert render_pdb(parse_spec(spec), REF) is None


def test_hpa_scales_the_deployment_on_cpu_or_custom_metric() -> None:
    assert render_hpa(parse_spec(minimal()), REF) is None
    hpa = render_hpa(parse_spec(minimal(autoscaling={
        "minReplicas": 2, "maxReplicas": 6, "metric": {"name": "inflight", "targetAverageValue": "10"},
    })), REF)
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [{
        "type": "Pods",
        "pods": {"metric": {"name": "inflight"}, "target": {"type": "AverageValue", "averageValue": "10"}},
    }]


def test_unwanted_children_lists_optional_kinds_not_rendered() -> None:
    single = render_all(parse_spec(minimal()), REF, IMAGE)
    assert unwanted_children(single, REF) == [
        ("policy/v1", "PodDisruptionBudget", "iris"), ("autoscaling/v2", "HorizontalPodAutoscaler", "iris"),
    ]
    scaled = render_all(parse_spec(minimal(autoscaling={"minReplicas": 2, "maxReplicas": 3, "targetCPUUtilization": 9})), REF, IMAGE)
    assert unwanted_children(scaled, REF) == []


def test_node_selector_tolerations_and_env_reach_the_pod() -> None:
    pod = pod_spec(minimal(
        env=[{"name": "A", "value": "1"}], nodeSelector={"zone": "a"},
        tolerations=[{"key": "k", "operator": "Exists"}],
    ))
    assert pod["nodeSelector"] == {"zone": "a"}
    assert pod["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert pod["containers"][0]["env"] == [
        {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/modeldeploy-metrics"}, {"name": "A", "value": "1"}
    ]


def test_server_keeps_its_workers_metrics_in_a_memory_emptydir() -> None:
    pod = pod_spec(minimal())
    server = pod["containers"][0]
    assert {"name": "metrics", "mountPath": "/tmp/modeldeploy-metrics"} in server["volumeMounts"]
    assert {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/modeldeploy-metrics"} in server["env"]
    assert {"name": "metrics", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}} in pod["volumes"]
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
