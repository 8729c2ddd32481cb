"""Pure renderers: a ModelDeployment spec in, the Kubernetes objects it needs out.

Nothing here talks to the API server or knows about kopf; owner references are added by
the handlers (`kopf.adopt`) just before applying. Child names are derived from the parent's
name so every reconcile addresses the same objects.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from modeldeploy.contract.api import MANAGED_BY, MODEL_LABEL, SPEC_HASH_ANNOTATION
from modeldeploy.contract.pod import (
    CONFIG_KEY,
    CONFIG_PATH,
    HEALTH_LIVE,
    HEALTH_READY,
    HEALTH_STARTUP,
    INIT_CONTAINER,
    KEYS_DIR,
    MODEL_DIR,
    MODEL_ROOT,
    PORT_NAME,
    RUN_AS,
    SERVER_CONTAINER,
    SERVER_PORT,
    TERMINATION_LOG,
    TRUST_KEY,
    TRUST_PATH,
    FetchArgs,
    ServeArgs,
    ServerConfig,
)
from modeldeploy.contract.spec import ModelDeploymentSpec, SecretKeyRef, SpecError
from modeldeploy.contract.trust import TrustBundle

Manifest = dict[str, Any]

DEFAULT_MAX_BYTES = 10 << 30
VOLUME_MARGIN = 64 << 20  # signature, fetch's marker, filesystem overhead
APP_NAME = "model-server"


@dataclass(frozen=True)
class ObjectRef:
    """Which ModelDeployment is being rendered."""

    name: str
    namespace: str


def deployment_name(ref: ObjectRef) -> str:
    return ref.name


def service_name(ref: ObjectRef) -> str:
    return ref.name


def config_map_name(ref: ObjectRef) -> str:
    return f"{ref.name}-config"


def selector_labels(ref: ObjectRef) -> dict[str, str]:
    """Labels that select the model's pods (immutable for the Deployment's lifetime)."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": ref.name}


def labels(ref: ObjectRef, spec: ModelDeploymentSpec) -> dict[str, str]:
    """The app labels every child carries."""
    return {
        **selector_labels(ref),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": spec.model.version,
        MODEL_LABEL: spec.model.name,
    }


def endpoint(ref: ObjectRef, spec: ModelDeploymentSpec) -> str:
    """The in-cluster URL of the model's Service."""
    return f"http://{service_name(ref)}.{ref.namespace}.svc:{spec.service.port}"


def _meta(ref: ObjectRef, spec: ModelDeploymentSpec, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": ref.namespace, "labels": labels(ref, spec)}


def server_config(spec: ModelDeploymentSpec) -> str:
    """The model server's `server.yaml` (the contract's `ServerConfig`): request limit, policies, rechecks."""
    limit = {} if spec.max_request_bytes is None else {"max_request_bytes": spec.max_request_bytes}
    config = ServerConfig(policies=spec.policies, recheck_seconds=spec.verification.recheck_seconds, **limit)
    return str(yaml.safe_dump(config.document(), sort_keys=False))


def config_data(spec: ModelDeploymentSpec, trust: TrustBundle | None) -> dict[str, str]:
    """`server.yaml`, and `trust.json` when a trust policy decides the signers."""
    data = {CONFIG_KEY: server_config(spec)}
    if trust is not None:
        data[TRUST_KEY] = trust.document()
    return data


def render_config_map(spec: ModelDeploymentSpec, ref: ObjectRef, trust: TrustBundle | None = None) -> Manifest:
    """The ConfigMap holding `server.yaml` (and `trust.json`)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(ref, spec, config_map_name(ref)),
        "data": config_data(spec, trust),
    }


def _spec_key(spec: ModelDeploymentSpec) -> SecretKeyRef:
    """The spec's own public key, needed when no trust policy decides.

    Raises:
        SpecError: neither a trust policy nor spec.parameters.publicKey names a signer.
    """
    if spec.parameters.public_key is None:
        raise SpecError("no signer to verify with: set spec.parameters.publicKey, or create a "
                        "ModelTrustPolicy that selects this namespace")
    return spec.parameters.public_key


def _verify_with(spec: ModelDeploymentSpec, trust: TrustBundle | None) -> tuple[str | None, str | None]:
    """The `public_key` and `trust` arguments of the fetch and serve command lines (one of them set)."""
    return (None, TRUST_PATH) if trust is not None else (f"{KEYS_DIR}/{_spec_key(spec).key}", None)


def max_bytes(spec: ModelDeploymentSpec) -> int:
    """What fetch may download and unpack for this spec."""
    return spec.parameters.max_bytes or DEFAULT_MAX_BYTES


def model_volume_limit(spec: ModelDeploymentSpec) -> int:
    """The parameters emptyDir's sizeLimit: an installed tree plus a new fetch's staging."""
    return 2 * max_bytes(spec) + VOLUME_MARGIN


def fetch_args(spec: ModelDeploymentSpec, trust: TrustBundle | None = None) -> FetchArgs:
    """The init container's command line for this spec."""
    params = spec.parameters
    return FetchArgs(
        source=params.source,
        dest=MODEL_DIR,
        public_key=_verify_with(spec, trust)[0],
        trust=_verify_with(spec, trust)[1],
        termination_log=TERMINATION_LOG,
        max_bytes=max_bytes(spec),
        deadline=spec.probes.max_load_seconds,
        signature_uri=params.signature,
        sha256=params.sha256,
    )


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": min(period, 5),
        "failureThreshold": failures,
    }


def _probes(spec: ModelDeploymentSpec) -> dict[str, Any]:
    period = spec.probes.period_seconds
    return {
        "startupProbe": _http_probe(
            HEALTH_STARTUP, period, max(1, math.ceil(spec.probes.max_load_seconds / period))
        ),
        "readinessProbe": _http_probe(HEALTH_READY, period, 3),
        "livenessProbe": _http_probe(HEALTH_LIVE, period * 2, 3),
    }


def _resources(spec: ModelDeploymentSpec) -> dict[str, Any]:
    return spec.resources.model_dump(exclude_none=True)


def _trust_mounts(trust: TrustBundle | None) -> list[dict[str, Any]]:
    """The trust material: `trust.json` from the ConfigMap, or the spec's key Secret."""
    if trust is not None:
        return [{"name": "config", "mountPath": TRUST_PATH, "subPath": TRUST_KEY, "readOnly": True}]
    return [{"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}]


def _init_container(spec: ModelDeploymentSpec, image: str, trust: TrustBundle | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": INIT_CONTAINER,
        "image": image,
        "command": fetch_args(spec, trust).argv(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_ROOT},
            *_trust_mounts(trust),
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if spec.parameters.credentials:
        container["envFrom"] = [{"secretRef": {"name": spec.parameters.credentials.secret_name}}]
    if _resources(spec):
        container["resources"] = _resources(spec)
    return container


def _server_container(spec: ModelDeploymentSpec, image: str, trust: TrustBundle | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": image,
        "command": ServeArgs(MODEL_DIR, CONFIG_PATH, *_verify_with(spec, trust)).argv(),
        "ports": [{"name": PORT_NAME, "containerPort": SERVER_PORT, "protocol": "TCP"}],
        **_probes(spec),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_ROOT, "readOnly": True},
            *_trust_mounts(trust),
            {"name": "config", "mountPath": CONFIG_PATH, "subPath": CONFIG_KEY, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if spec.env:
        container["env"] = [var.model_dump(by_alias=True, exclude_none=True) for var in spec.env]
    if _resources(spec):
        container["resources"] = _resources(spec)
    return container


def _key_volumes(spec: ModelDeploymentSpec, trust: TrustBundle | None) -> list[dict[str, Any]]:
    if trust is not None:
        return []
    key = _spec_key(spec)
    return [{"name": "keys", "secret": {"secretName": key.secret_name, "items": [{"key": key.key, "path": key.key}]}}]


def _pod_spec(spec: ModelDeploymentSpec, ref: ObjectRef, image: str, trust: TrustBundle | None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [_init_container(spec, image, trust)],
        "containers": [_server_container(spec, image, trust)],
        "volumes": [
            {"name": "model", "emptyDir": {"sizeLimit": str(model_volume_limit(spec))}},
            {"name": "tmp", "emptyDir": {}},
            *_key_volumes(spec, trust),
            {"name": "config", "configMap": {"name": config_map_name(ref)}},
        ],
    }
    if spec.node_selector:
        pod["nodeSelector"] = spec.node_selector
    if spec.tolerations:
        pod["tolerations"] = [item.model_dump(by_alias=True, exclude_none=True) for item in spec.tolerations]
    return pod


def spec_hash(pod_spec: dict[str, Any], config: dict[str, str]) -> str:
    """A short digest of what the pods run with (pod spec, server.yaml, trust.json): any change rolls them out."""
    blob = json.dumps({"pod": pod_spec, "config": config}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def render_deployment(
    spec: ModelDeploymentSpec, ref: ObjectRef, default_image: str | None = None, trust: TrustBundle | None = None,
) -> Manifest:
    """The Deployment: init container fetch + verify, then the server (the pod contract).

    Args:
        spec: the parsed spec.
        ref: the ModelDeployment being rendered.
        default_image: the server image when the spec does not name one.
        trust: the signers a trust policy decides; None: the spec's publicKey.

    Raises:
        SpecError: neither the spec nor the operator names a server image, or no signer is named.
    """
    image = spec.image or default_image
    if not image:
        raise SpecError("spec.image is not set and the operator has no default server image")
    pod = _pod_spec(spec, ref, image, trust)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(ref)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": labels(ref, spec),
                "annotations": {SPEC_HASH_ANNOTATION: spec_hash(pod, config_data(spec, trust))},
            },
            "spec": pod,
        },
    }
    if spec.autoscaling is None:
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(ref, spec, deployment_name(ref)),
        "spec": deployment_spec,
    }


def render_service(spec: ModelDeploymentSpec, ref: ObjectRef) -> Manifest:
    """The Service in front of the model's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ref, spec, service_name(ref)),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(ref),
            "ports": [{"name": PORT_NAME, "port": spec.service.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def min_replicas(spec: ModelDeploymentSpec) -> int:
    """The fewest replicas the spec asks for (autoscaling's floor when set)."""
    return spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas


def render_pdb(spec: ModelDeploymentSpec, ref: ObjectRef) -> Manifest | None:
    """A PodDisruptionBudget allowing one voluntary disruption; None below two replicas."""
    if min_replicas(spec) < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(ref, spec, deployment_name(ref)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(ref)}},
    }


def render_hpa(spec: ModelDeploymentSpec, ref: ObjectRef) -> Manifest | None:
    """A HorizontalPodAutoscaler on CPU and/or a custom per-pod metric; None without autoscaling."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    metrics: list[dict[str, Any]] = []
    if scaling.target_cpu_utilization is not None:
        metrics.append({
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization},
            },
        })
    if scaling.metric is not None:
        metrics.append({
            "type": "Pods",
            "pods": {
                "metric": {"name": scaling.metric.name},
                "target": {"type": "AverageValue", "averageValue": scaling.metric.target_average_value},
            },
        })
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(ref, spec, deployment_name(ref)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(ref)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
        },
    }


def render_all(
    spec: ModelDeploymentSpec, ref: ObjectRef, default_image: str | None = None, trust: TrustBundle | None = None,
) -> list[Manifest]:
    """Every child in apply order (config before the pods that mount it)."""
    children = [
        render_config_map(spec, ref, trust),
        render_service(spec, ref),
        render_deployment(spec, ref, default_image, trust),
        render_pdb(spec, ref),
        render_hpa(spec, ref),
    ]
    return [child for child in children if child is not None]


OPTIONAL_KINDS = (("policy/v1", "PodDisruptionBudget"), ("autoscaling/v2", "HorizontalPodAutoscaler"))


def unwanted_children(children: list[Manifest], ref: ObjectRef) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of optional children missing from `children`, to be deleted."""
    rendered = {(child["apiVersion"], child["kind"]) for child in children}
    return [(api, kind, deployment_name(ref)) for api, kind in OPTIONAL_KINDS if (api, kind) not in rendered]
