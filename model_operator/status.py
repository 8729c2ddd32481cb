"""The ModelDeployment's status, computed purely from its Deployment and pods.

`ParametersVerified` comes from the fetch init container's termination message (contract 2);
`Available`/`Progressing` from the Deployment; `Ready` sums them up. No API calls here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from model_operator import conditions as cond
from model_operator.render import (
    INIT_CONTAINER,
    SPEC_HASH_ANNOTATION,
    ObjectRef,
    endpoint,
    selector_labels,
)
from modeldeploy.contract.spec import ModelDeploymentSpec

Status = dict[str, Any]

# fetch writes `verified` and `reason` first, so they survive a message cut at 4 KiB
_RECORD_HEAD = re.compile(r'^\{\s*"verified"\s*:\s*(true|false)\s*,\s*"reason"\s*:\s*"([A-Za-z]+)"')


@dataclass(frozen=True)
class Verification:
    """What the newest pods' fetch containers said about the parameters."""

    status: str
    reason: str
    message: str
    key_fingerprint: str | None = None
    manifest_digest: str | None = None
    verified_at: str | None = None
    failed_files: tuple[str, ...] = field(default=())


def parse_termination_message(text: str | None) -> dict[str, Any] | None:
    """The fetch result (contract 2) from a termination message, or None if it is not one."""
    if not text:
        return None
    for line in reversed(text.strip().splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and isinstance(result.get("verified"), bool) and "reason" in result:
            return result
    head = _RECORD_HEAD.match(text.strip().splitlines()[-1].strip())
    if head:  # a record cut short: keep its reason
        return {"verified": head[1] == "true", "reason": head[2], "message": "(the fetch result was truncated)"}
    return None


def _fetch_status(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    statuses = pod.get("status", {}).get("initContainerStatuses") or []
    return next((s for s in statuses if s.get("name") == INIT_CONTAINER), None)


def reports_fetch(pod: Mapping[str, Any]) -> bool:
    """Whether a pod's fetch container has something to say: a result, or an unusual wait."""
    status = _fetch_status(pod)
    if status is None:
        return False
    state, last = status.get("state") or {}, status.get("lastState") or {}
    waiting = (state.get("waiting") or {}).get("reason")
    return bool(state.get("terminated") or last.get("terminated")) or waiting not in (
        None, "PodInitializing", "ContainerCreating",
    )


def _from_terminated(terminated: dict[str, Any]) -> Verification:
    result = parse_termination_message(terminated.get("message"))
    if result is None:
        return Verification(
            "False",
            "FetchFailed",
            f"fetch exited with code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')}) "
            "without a verification result",
        )
    return Verification(
        "True" if result["verified"] else "False",
        str(result["reason"]),
        str(result.get("message", "")),
        result.get("keyFingerprint"),
        result.get("manifestDigest"),
        terminated.get("finishedAt") if result["verified"] else None,
        tuple(result.get("failedFiles") or ()),
    )


def verification(pods: list[dict[str, Any]], current_hash: str) -> Verification:
    """Summarise the fetch results of the pods running the current spec.

    A success on any current pod means the parameters verified; otherwise the latest
    failure explains why the rollout is stuck; otherwise the result is still pending.
    """
    current = [
        p for p in pods
        if p.get("metadata", {}).get("annotations", {}).get(SPEC_HASH_ANNOTATION) == current_hash
        and not p.get("metadata", {}).get("deletionTimestamp")
    ]
    if not current:
        return Verification("Unknown", "NoPods", "no pod of the current version exists yet")
    failure: Verification | None = None
    waiting = "waiting for the fetch init container"
    for pod in current:
        status = _fetch_status(pod)
        if status is None:
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            result = _from_terminated(terminated)
            if result.status == "True":
                return result
            failure = result
            continue
        last = (status.get("lastState") or {}).get("terminated")
        if last:
            failure = _from_terminated(last)
        reason = ((status.get("state") or {}).get("waiting") or {}).get("reason")
        if reason and reason not in ("PodInitializing", "ContainerCreating", "CrashLoopBackOff"):
            waiting = f"fetch container is waiting: {reason}"
    return failure or Verification("Unknown", "Pending", waiting)


def _deployment_condition(deployment: dict[str, Any], type_: str) -> dict[str, Any]:
    found = cond.find(deployment.get("status", {}).get("conditions") or [], type_)
    return found or {}


def compute_status(
    spec: ModelDeploymentSpec,
    ref: ObjectRef,
    generation: int,
    old_conditions: list[cond.Condition],
    deployment: dict[str, Any],
    pods: list[dict[str, Any]],
    now: str,
) -> Status:
    """The full `.status` of a ModelDeployment.

    Args:
        spec: the parsed spec.
        ref: the ModelDeployment.
        generation: its `metadata.generation`.
        old_conditions: its current `status.conditions`.
        deployment: the Deployment as read back from the API server.
        pods: the pods selected by the Deployment.
        now: an RFC 3339 timestamp for condition transitions.
    """
    dep_status = deployment.get("status", {})
    desired = int(deployment.get("spec", {}).get("replicas", 0) or 0)
    replicas = int(dep_status.get("replicas", 0) or 0)
    ready = int(dep_status.get("readyReplicas", 0) or 0)
    updated = int(dep_status.get("updatedReplicas", 0) or 0)
    available = int(dep_status.get("availableReplicas", 0) or 0)
    observed = dep_status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 0)
    complete = observed and updated == desired and replicas == desired and available >= desired

    current_hash = deployment["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    verified = verification(pods, current_hash)

    available_cond = _deployment_condition(deployment, "Available")
    progress_cond = _deployment_condition(deployment, "Progressing")
    if progress_cond.get("reason") == "ProgressDeadlineExceeded":
        progressing = ("False", "ProgressDeadlineExceeded", progress_cond.get("message", ""))
    elif complete:
        progressing = ("False", "RolloutComplete", f"{updated} of {desired} replicas run the current version")
    else:
        progressing = ("True", "RolloutProgressing", f"{updated} of {desired} replicas updated, {available} available")

    if verified.status == "False":
        ready_cond = ("False", verified.reason, f"parameters of the current version failed verification: {verified.message}")
    elif desired == 0:
        ready_cond = ("False", "ScaledToZero", "no replicas requested")
    elif complete and ready >= desired and verified.status == "True":
        ready_cond = ("True", "Serving", f"{ready} of {desired} replicas serve {spec.model.name} {spec.model.version}")
    else:
        ready_cond = ("False", "RolloutProgressing", progressing[2])

    conditions = old_conditions
    for type_, (value, reason, message) in (
        (cond.PARAMETERS_VERIFIED, (verified.status, verified.reason, verified.message)),
        (cond.AVAILABLE, (
            available_cond.get("status", "Unknown"),
            available_cond.get("reason", "Pending"),
            available_cond.get("message", "the Deployment has not reported availability yet"),
        )),
        (cond.PROGRESSING, progressing),
        (cond.READY, ready_cond),
    ):
        conditions = cond.set_condition(conditions, type_, value, reason, message, now, generation)

    status: Status = {
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "ready": f"{ready}/{desired}",
        "selector": ",".join(f"{k}={v}" for k, v in selector_labels(ref).items()),
        "endpoint": endpoint(ref, spec),
        "conditions": conditions,
    }
    # Every key is always present (None deletes it) so a merge patch never leaves stale values.
    status["verification"] = {
        "keyFingerprint": verified.key_fingerprint,
        "manifestDigest": verified.manifest_digest,
        "verifiedAt": verified.verified_at,
        "failedFiles": list(verified.failed_files) or None,
    }
    return status


def spec_error_status(
    generation: int, old_conditions: list[cond.Condition], message: str, now: str, reason: str = "SpecInvalid",
) -> Status:
    """The status of a ModelDeployment whose children cannot be rendered or applied."""
    conditions = cond.set_condition(old_conditions, cond.READY, "False", reason, message, now, generation)
    return {"observedGeneration": generation, "conditions": conditions}


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def status_changed(old: dict[str, Any] | None, new: Status) -> bool:
    """Whether writing `new` (a merge patch, where None deletes) would change the stored `old` status."""
    old = old or {}
    for key, value in new.items():
        wanted, stored = _without_none(value), old.get(key)
        if wanted in (None, {}) and stored in (None, {}):
            continue
        if wanted != stored:
            return True
    return False


def fingerprint(obj: Mapping[str, Any]) -> tuple[str, str]:
    """What identifies a child's written state: uid plus generation (spec writes) or resourceVersion.

    Status-only updates by controllers keep the generation, so they do not look like drift.
    """
    meta = obj["metadata"]
    return str(meta.get("uid")), str(meta.get("generation") or meta.get("resourceVersion"))
