"""The ModelDeployment's status, computed purely from its Deployment and pods.

`ParametersVerified` comes from the fetch init container's termination record (the pod
contract's `TerminationRecord`); `Available`/`Progressing` from the Deployment; `Ready`
sums them up. The result is the contract's typed `ModelDeploymentStatus`. No API calls here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model_operator import conditions as cond
from model_operator.render import ObjectRef, endpoint, selector_labels
from modeldeploy.contract import reasons
from modeldeploy.contract.api import REVISION_LABEL, SPEC_HASH_ANNOTATION
from modeldeploy.contract.pod import INIT_CONTAINER, SERVER_CONTAINER, ReadinessReport, TerminationRecord
from modeldeploy.contract.rollout import ROLLOUT_HEALTHY, AnalysisResult, RolloutStatus
from modeldeploy.contract.spec import ModelDeploymentSpec
from modeldeploy.contract.status import (
    AVAILABLE,
    PARAMETERS_VERIFIED,
    PROGRESSING,
    READY,
    Condition,
    ConditionStatus,
    ModelDeploymentStatus,
    Verification,
)

# The kubelet's waiting reasons of an init container that is simply on its way.
STARTING = ("PodInitializing", "ContainerCreating")


@dataclass(frozen=True)
class FetchResult:
    """What the newest pods' fetch containers said about the parameters."""

    status: ConditionStatus
    reason: str
    message: str
    record: TerminationRecord | None = None  # the fetch container's record, when it wrote one
    verified_at: str | None = None

    def verification(self, admitted_at: str | None) -> Verification:
        """The evidence for `status.verification` (every field given, so stale values are deleted)."""
        record = self.record or TerminationRecord(verified=False, reason=self.reason)
        return Verification(
            signer=record.signer,
            issuer=record.issuer,
            trusted_by=record.trusted_by,
            key_fingerprint=record.key_fingerprint,
            manifest_digest=record.manifest_digest,
            hash_algorithm=record.hash_algorithm,
            signed_policies=list(record.signed_policies) if record.verified else None,
            admitted_at=admitted_at,
            verified_at=self.verified_at,
            failed_files=list(record.failed_files) or None,
        )


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
    return bool(state.get("terminated") or last.get("terminated")) or waiting not in (None, *STARTING)


def _server_status(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == SERVER_CONTAINER), None)


def stopped_being_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's server has started and runs, but is not ready: its readiness report says why."""
    status = _server_status(pod)
    return bool(status and status.get("started") and "running" in (status.get("state") or {})
                and not status.get("ready") and pod.get("status", {}).get("podIP"))


def _current(pods: list[dict[str, Any]], current_hash: str) -> list[dict[str, Any]]:
    return [
        p for p in pods
        if p.get("metadata", {}).get("annotations", {}).get(SPEC_HASH_ANNOTATION) == current_hash
        and not p.get("metadata", {}).get("deletionTimestamp")
    ]


def integrity_failure(pods: list[dict[str, Any]], current_hash: str,
                      reports: Mapping[str, ReadinessReport]) -> FetchResult | None:
    """A verification failure a current pod's server found after it loaded (its readiness report), if any."""
    for pod in _current(pods, current_hash):
        report = reports.get(pod["metadata"].get("name", ""))
        if report is not None and not report.ready and report.reason in reasons.VERIFICATION:
            record = TerminationRecord(verified=False, reason=report.reason, message=report.message,
                                       failedFiles=report.failed_files)
            return FetchResult("False", report.reason, f"pod {pod['metadata']['name']}: {report.message}", record)
    return None


def _from_terminated(terminated: dict[str, Any]) -> FetchResult:
    record = TerminationRecord.parse(terminated.get("message"))
    if record is None:
        return FetchResult(
            "False",
            reasons.FETCH_FAILED,
            f"fetch exited with code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')}) "
            "without a verification result",
        )
    return FetchResult(
        "True" if record.verified else "False",
        record.reason,
        record.message,
        record,
        terminated.get("finishedAt") if record.verified else None,
    )


def fetch_result(pods: list[dict[str, Any]], current_hash: str) -> FetchResult:
    """Summarise the fetch results of the pods running the current spec.

    A success on any current pod means the parameters verified; otherwise the latest
    failure explains why the rollout is stuck; otherwise the result is still pending.
    """
    current = _current(pods, current_hash)
    if not current:
        return FetchResult("Unknown", reasons.NO_PODS, "no pod of the current version exists yet")
    failure: FetchResult | None = None
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
        if reason and reason not in (*STARTING, "CrashLoopBackOff"):
            waiting = f"fetch container is waiting: {reason}"
    return failure or FetchResult("Unknown", reasons.PENDING, waiting)


def policy_conflicts(spec: ModelDeploymentSpec, record: TerminationRecord | None) -> str | None:
    """Why the spec's policies clash with the signed guardrails (same names), or None."""
    if record is None or not record.verified:
        return None
    clashing = sorted({policy.name for policy in spec.policies} & set(record.signed_policies))
    if not clashing:
        return None
    return (f"spec.policies {', '.join(clashing)} would replace signed guardrails of the same name; signed "
            "guardrails cannot be removed or replaced: rename the spec's policies")


def rolled_out(deployment: Mapping[str, Any] | None, revision: str | None = None) -> bool:
    """Whether a Deployment's pods all run its template (of `revision`, if given) and are available."""
    if deployment is None:
        return False
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = int(spec.get("replicas", 0) or 0)
    if revision is not None and deployment_revision(deployment) != revision:
        return False
    observed = status.get("observedGeneration", 0) >= (deployment.get("metadata") or {}).get("generation", 0)
    return bool(observed and int(status.get("updatedReplicas", 0) or 0) == desired
                and int(status.get("replicas", 0) or 0) == desired
                and int(status.get("availableReplicas", 0) or 0) >= desired)


def deployment_revision(deployment: Mapping[str, Any] | None) -> str | None:
    """The revision a Deployment runs (its revision label)."""
    found = (((deployment or {}).get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)
    return str(found) if found else None


def _deployment_condition(deployment: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = deployment.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def compute_status(
    spec: ModelDeploymentSpec,
    ref: ObjectRef,
    generation: int,
    old_conditions: list[Condition],
    deployment: dict[str, Any],
    pods: list[dict[str, Any]],
    now: str,
    admitted_at: str | None = None,
    reports: Mapping[str, ReadinessReport] | None = None,
    rollout: RolloutStatus | None = None,
    load_tests: list[AnalysisResult] | None = None,
) -> ModelDeploymentStatus:
    """The full `.status` of a ModelDeployment.

    Args:
        spec: the parsed spec.
        ref: the ModelDeployment.
        generation: its `metadata.generation`.
        old_conditions: its current `status.conditions`.
        deployment: the Deployment as read back from the API server.
        pods: the pods selected by the Deployment.
        now: an RFC 3339 timestamp for condition transitions.
        admitted_at: when the admission webhook verified the current signature, if it did.
        reports: readiness reports of pods whose server stopped being ready, by pod name.
        rollout: where the rollout stands (`rollout.plan_rollout`).
        load_tests: spec.loadTest's summaries per revision.
    """
    dep_status = deployment.get("status", {})
    desired = int(deployment.get("spec", {}).get("replicas", 0) or 0)
    replicas = int(dep_status.get("replicas", 0) or 0)
    ready = int(dep_status.get("readyReplicas", 0) or 0)
    updated = int(dep_status.get("updatedReplicas", 0) or 0)
    available = int(dep_status.get("availableReplicas", 0) or 0)
    complete = rolled_out(deployment)

    current_hash = deployment["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    verified = integrity_failure(pods, current_hash, reports or {}) or fetch_result(pods, current_hash)

    available_cond = _deployment_condition(deployment, "Available")
    progress_cond = _deployment_condition(deployment, "Progressing")
    progressing: tuple[ConditionStatus, str, str]
    if progress_cond.get("reason") == reasons.PROGRESS_DEADLINE_EXCEEDED:
        progressing = ("False", reasons.PROGRESS_DEADLINE_EXCEEDED, progress_cond.get("message", ""))
    elif complete:
        progressing = ("False", reasons.ROLLOUT_COMPLETE, f"{updated} of {desired} replicas run the current version")
    else:
        progressing = (
            "True", reasons.ROLLOUT_PROGRESSING, f"{updated} of {desired} replicas updated, {available} available"
        )

    ready_cond: tuple[ConditionStatus, str, str]
    conflicts = policy_conflicts(spec, verified.record)
    if conflicts:
        ready_cond = ("False", reasons.POLICY_CONFLICT, conflicts)
    elif verified.status == "False":
        ready_cond = (
            "False", verified.reason, f"parameters of the current version failed verification: {verified.message}"
        )
    elif desired == 0:
        ready_cond = ("False", reasons.SCALED_TO_ZERO, "no replicas requested")
    elif complete and ready >= desired and verified.status == "True":
        model = spec.model
        ready_cond = ("True", reasons.SERVING, f"{ready} of {desired} replicas serve {model.name} {model.version}")
    else:
        ready_cond = ("False", reasons.ROLLOUT_PROGRESSING, progressing[2])

    conditions = old_conditions
    for type_, (value, reason, message) in (
        (PARAMETERS_VERIFIED, (verified.status, verified.reason, verified.message)),
        (AVAILABLE, (
            available_cond.get("status", "Unknown"),
            available_cond.get("reason", reasons.PENDING),
            available_cond.get("message", "the Deployment has not reported availability yet"),
        )),
        (PROGRESSING, progressing),
        (READY, ready_cond),
        *([(ROLLOUT_HEALTHY, rollout_health(rollout, load_tests))] if rollout else []),
    ):
        conditions = cond.set_condition(conditions, type_, value, reason, message, now, generation)

    # Every field is given (None deletes it) so a merge patch never leaves stale values.
    return ModelDeploymentStatus(
        observed_generation=generation,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=updated,
        ready=f"{ready}/{desired}",
        selector=",".join(f"{k}={v}" for k, v in selector_labels(ref).items()),
        endpoint=endpoint(ref, spec),
        verification=verified.verification(admitted_at),
        rollout=rollout,
        load_test=load_tests or None,
        conditions=conditions,
    )


def rollout_health(rollout: RolloutStatus, load_tests: list[AnalysisResult] | None) -> tuple[ConditionStatus, str, str]:
    """RolloutHealthy: True once promoted (and its load test, if any, passed), False when rolled back."""
    measured = next((test for test in reversed(load_tests or []) if test.revision == rollout.stable_revision), None)
    if rollout.phase == "RolledBack":
        return "False", rollout.reason, rollout.message
    if rollout.phase != "Promoted":
        return "Unknown", rollout.reason, rollout.message
    if measured is not None and not measured.passed:
        return "False", reasons.LOAD_TEST_FAILED, f"load test of revision {measured.revision}: {measured.message}"
    return "True", rollout.reason, rollout.message


def spec_error_status(
    generation: int, old_conditions: list[Condition], message: str, now: str, reason: str = reasons.SPEC_INVALID,
) -> ModelDeploymentStatus:
    """The status of a ModelDeployment whose children cannot be rendered or applied (the rest stays)."""
    conditions = cond.set_condition(old_conditions, READY, "False", reason, message, now, generation)
    return ModelDeploymentStatus(observed_generation=generation, conditions=conditions)


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def status_changed(old: Mapping[str, Any] | None, new: ModelDeploymentStatus) -> bool:
    """Whether writing `new` (a merge patch, where None deletes) would change the stored `old` status."""
    old = old or {}
    for key, value in new.patch().items():
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
