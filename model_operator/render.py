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

from modeldeploy.contract.api import (
    ANALYSIS_LABEL,
    MANAGED_BY,
    MODEL_LABEL,
    REVISION_LABEL,
    REVISION_SPEC_ANNOTATION,
    SPEC_HASH_ANNOTATION,
    TRACK_LABEL,
)
from modeldeploy.contract.pod import (
    CONFIG_DIR,
    CONFIG_KEY,
    CONFIG_PATH,
    GRPC_PORT,
    GRPC_PORT_NAME,
    HEALTH_LIVE,
    HEALTH_READY,
    HEALTH_STARTUP,
    INIT_CONTAINER,
    KEYS_DIR,
    METRICS_DIR,
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
    LoadTestArgs,
    ServeArgs,
    ServerConfig,
)
from modeldeploy.contract.rollout import DEFAULT_USERS, Analysis
from modeldeploy.contract.spec import REVISION_FIELDS, ModelDeploymentSpec, SecretKeyRef, SpecError
from modeldeploy.contract.trust import TrustBundle

Manifest = dict[str, Any]

DEFAULT_MAX_BYTES = 10 << 30
VOLUME_MARGIN = 64 << 20  # signature, fetch's marker, filesystem overhead
APP_NAME = "model-server"
ANALYSIS_APP = "modeldeploy-analysis"
CANARY = "canary"
INPUTS_DIR = f"{CONFIG_DIR}/inputs"
JOB_SLACK_SECONDS = 120  # what an analysis Job may take beyond its load: start, metadata, comparison
JOB_TTL_SECONDS = 86400  # finished analysis Jobs stay a day for `kubectl logs`; their verdict is in the status


@dataclass(frozen=True)
class ObjectRef:
    """Which ModelDeployment is being rendered, and which of its tracks (the stable pods or the canary)."""

    name: str
    namespace: str
    track: str = "stable"

    def canary(self) -> ObjectRef:
        return ObjectRef(self.name, self.namespace, CANARY)

    def stable(self) -> ObjectRef:
        return ObjectRef(self.name, self.namespace)


def _track_suffix(ref: ObjectRef) -> str:
    return f"-{CANARY}" if ref.track == CANARY else ""


def deployment_name(ref: ObjectRef) -> str:
    return f"{ref.name}{_track_suffix(ref)}"


def service_name(ref: ObjectRef) -> str:
    return ref.name


def config_map_name(ref: ObjectRef) -> str:
    return f"{ref.name}{_track_suffix(ref)}-config"


def selector_labels(ref: ObjectRef) -> dict[str, str]:
    """Labels that select the track's pods (immutable for the Deployment's lifetime).

    The stable track's are also the Service's: they select the canary's pods too, so the canary
    takes its share of the traffic without a service mesh.
    """
    labels = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": ref.name}
    return {**labels, TRACK_LABEL: CANARY} if ref.track == CANARY else labels


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


def _grpc_probe(period: int, failures: int) -> dict[str, Any]:
    """The gRPC health service's answer for the server as a whole (SERVING once the model is ready)."""
    return {
        "grpc": {"port": GRPC_PORT, "service": ""},
        "periodSeconds": period,
        "timeoutSeconds": min(period, 5),
        "failureThreshold": failures,
    }


def _probes(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """Startup and liveness over HTTP; readiness over HTTP, or gRPC health when the spec asks."""
    period = spec.probes.period_seconds
    return {
        "startupProbe": _http_probe(
            HEALTH_STARTUP, period, max(1, math.ceil(spec.probes.max_load_seconds / period))
        ),
        "readinessProbe": (_grpc_probe(period, 3) if spec.probes.grpc_readiness
                           else _http_probe(HEALTH_READY, period, 3)),
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


def _container_ports(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    ports = [{"name": PORT_NAME, "containerPort": SERVER_PORT, "protocol": "TCP"}]
    if spec.grpc:
        ports.append({"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"})
    return ports


def _service_ports(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    ports = [{"name": PORT_NAME, "port": spec.service.port, "targetPort": PORT_NAME, "protocol": "TCP"}]
    if spec.grpc:  # HTTP/2 in clear text: what gateways and meshes need to know to balance per request
        ports.append({"name": GRPC_PORT_NAME, "port": spec.service.grpc_port, "targetPort": GRPC_PORT_NAME,
                      "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"})
    return ports


def _server_container(spec: ModelDeploymentSpec, image: str, trust: TrustBundle | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": image,
        "command": ServeArgs(MODEL_DIR, CONFIG_PATH, *_verify_with(spec, trust),
                             grpc_port=GRPC_PORT if spec.grpc else 0).argv(),
        "ports": _container_ports(spec),
        **_probes(spec),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_ROOT, "readOnly": True},
            *_trust_mounts(trust),
            {"name": "config", "mountPath": CONFIG_PATH, "subPath": CONFIG_KEY, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "metrics", "mountPath": METRICS_DIR},
        ],
        # the server's worker processes keep their metrics here, to report the pod's total
        "env": [{"name": "PROMETHEUS_MULTIPROC_DIR", "value": METRICS_DIR}],
    }
    if spec.env:
        container["env"] += [var.model_dump(by_alias=True, exclude_none=True) for var in spec.env]
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
            {"name": "metrics", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
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


def server_image(spec: ModelDeploymentSpec, default_image: str | None) -> str:
    """The image the pods (and the analysis Jobs) run.

    Raises:
        SpecError: neither the spec nor the operator names a server image.
    """
    image = spec.image or default_image
    if not image:
        raise SpecError("spec.image is not set and the operator has no default server image")
    return image


def revision_document(spec: ModelDeploymentSpec) -> str:
    """The spec's revision fields as JSON: what the stable Deployment records it runs."""
    fields = spec.model_dump(by_alias=True, mode="json", exclude_unset=True, include=set(REVISION_FIELDS))
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def revision(spec: ModelDeploymentSpec, ref: ObjectRef, default_image: str | None = None,
             trust: TrustBundle | None = None) -> str:
    """The spec's revision: the digest of what its stable pods would run (the stable template's spec hash)."""
    template = render_deployment(spec, ref.stable(), default_image, trust)["spec"]["template"]
    return str(template["metadata"]["annotations"][SPEC_HASH_ANNOTATION])


def render_deployment(
    spec: ModelDeploymentSpec, ref: ObjectRef, default_image: str | None = None, trust: TrustBundle | None = None,
    replicas: int | None = None,
) -> Manifest:
    """The track's Deployment: init container fetch + verify, then the server (the pod contract).

    Args:
        spec: the parsed spec.
        ref: the ModelDeployment being rendered, and the track.
        default_image: the server image when the spec does not name one.
        trust: the signers a trust policy decides; None: the spec's publicKey.
        replicas: the canary's replicas (the stable track's come from the spec or its autoscaler).

    Raises:
        SpecError: neither the spec nor the operator names a server image, or no signer is named.
    """
    pod = _pod_spec(spec, ref, server_image(spec, default_image), trust)
    pod_hash = spec_hash(pod, config_data(spec, trust))
    meta = _meta(ref, spec, deployment_name(ref))
    template_labels = labels(ref, spec)
    if ref.track == CANARY:
        template_labels[REVISION_LABEL] = meta["labels"][REVISION_LABEL] = revision(spec, ref, default_image, trust)
    else:
        meta["labels"][REVISION_LABEL] = pod_hash
        meta["annotations"] = {REVISION_SPEC_ANNOTATION: revision_document(spec)}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(ref)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {"labels": template_labels, "annotations": {SPEC_HASH_ANNOTATION: pod_hash}},
            "spec": pod,
        },
    }
    if replicas is not None or spec.autoscaling is None:
        deployment_spec = {"replicas": spec.replicas if replicas is None else replicas, **deployment_spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": deployment_spec}


def render_service(spec: ModelDeploymentSpec, ref: ObjectRef) -> Manifest:
    """The Service in front of the model's pods (the stable ones and the canary's)."""
    ref = ref.stable()
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ref, spec, service_name(ref)),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(ref),
            "ports": _service_ports(spec),
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


def render_canary(spec: ModelDeploymentSpec, ref: ObjectRef, default_image: str | None, trust: TrustBundle | None,
                  replicas: int) -> list[Manifest]:
    """The canary's ConfigMap and Deployment: the spec's revision on `replicas` pods behind the same Service."""
    canary = ref.canary()
    return [render_config_map(spec, canary, trust), render_deployment(spec, canary, default_image, trust, replicas)]


def optional_children(ref: ObjectRef, canary: bool) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of the children a spec may not want: PDB, HPA, and (`canary`) the canary's."""
    optional = [("policy/v1", "PodDisruptionBudget", deployment_name(ref)),
                ("autoscaling/v2", "HorizontalPodAutoscaler", deployment_name(ref))]
    if canary:
        optional += [("apps/v1", "Deployment", deployment_name(ref.canary())),
                     ("v1", "ConfigMap", config_map_name(ref.canary()))]
    return optional


def unwanted_children(children: list[Manifest], ref: ObjectRef, canary: bool = False) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of optional children missing from `children`, to be deleted."""
    rendered = {(child["apiVersion"], child["kind"], child["metadata"]["name"]) for child in children}
    return [child for child in optional_children(ref, canary) if child not in rendered]


def render_analysis_job(
    spec: ModelDeploymentSpec, ref: ObjectRef, default_image: str | None, name: str, analysis: Analysis,
    kind: str, measured_revision: str, targets: list[str], baseline: list[str],
) -> Manifest:
    """A Job running the server image's `modeldeploy loadtest` against `targets` (and `baseline` alike).

    It needs no API access (no ServiceAccount token): it talks to pod addresses, reads its inputs
    from a mounted ConfigMap, and writes its `AnalysisReport` to its termination message.
    """
    inputs = analysis.inputs
    args = LoadTestArgs(
        targets=tuple(targets), model=spec.model.name, duration_seconds=analysis.duration_seconds,
        users=analysis.users or (None if analysis.rate else DEFAULT_USERS), rate=analysis.rate,
        samples=analysis.samples, inputs=f"{INPUTS_DIR}/{inputs.key}" if inputs else None,
        baseline=tuple(baseline), tolerance=analysis.gates.prediction_tolerance,
    )
    job_labels = {"app.kubernetes.io/name": ANALYSIS_APP, "app.kubernetes.io/instance": ref.name,
                  "app.kubernetes.io/managed-by": MANAGED_BY, ANALYSIS_LABEL: kind, REVISION_LABEL: measured_revision}
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if inputs:
        mounts.append({"name": "inputs", "mountPath": INPUTS_DIR, "readOnly": True})
        volumes.append({"name": "inputs", "configMap": {"name": inputs.config_map_name,
                                                        "items": [{"key": inputs.key, "path": inputs.key}]}})
    container = {
        "name": "loadtest",
        "image": server_image(spec, default_image),
        "command": args.argv(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": _container_security(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ref.namespace, "labels": job_labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": analysis.duration_seconds + JOB_SLACK_SECONDS,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
