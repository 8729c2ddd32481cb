"""The rollout state machine, pure: what is observed in, what to run and what to say out.

A revision is what the pods run with (`render.revision`). Under `strategy: Canary` a new revision
first runs in the canary Deployment beside the stable one, behind the same Service; each step
scales the canary, waits for its pods, and runs an analysis Job (the server image's
`modeldeploy loadtest` against the canary's pods and, with the same inputs, the stable pods).
A passed last step promotes: the stable Deployment rolls to the new revision (maxUnavailable 0)
while the canary keeps serving, and the canary goes once the stable pods all run it. A failed
gate, a canary that does not get ready within `progressDeadlineSeconds`, or a canary whose
parameters fail verification rolls back: the canary goes, the stable Deployment is never touched.

Everything needed to resume is in `status.rollout` and in deterministic names (the canary
Deployment has one name; an analysis Job's name is derived from its revision, step and the
step's start), so a restarted operator picks up a running analysis instead of starting another.
`spec.loadTest` measures the stable revision once its rollout completes. No API calls here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from model_operator.render import ObjectRef
from model_operator.status import FetchResult, deployment_revision, rolled_out
from modeldeploy.contract import reasons
from modeldeploy.contract.api import REVISION_SPEC_ANNOTATION, SPEC_HASH_ANNOTATION
from modeldeploy.contract.pod import SERVER_PORT
from modeldeploy.contract.rollout import (
    LOAD_TEST_HISTORY,
    Analysis,
    AnalysisReport,
    AnalysisResult,
    Phase,
    RolloutStatus,
    judge,
)
from modeldeploy.contract.spec import ModelDeploymentSpec, SpecError, parse_spec, with_revision_of

NAME_PREFIX = 40  # of the ModelDeployment's name in a Job's name (Job names become 63-character labels)


@dataclass(frozen=True)
class JobState:
    """An analysis Job as observed: done or not, its report, why it failed."""

    name: str
    finished: bool
    report: AnalysisReport | None = None
    failure: str | None = None  # the Job's Failed condition, e.g. DeadlineExceeded


@dataclass(frozen=True)
class Observed:
    """What the cluster holds for one ModelDeployment."""

    stable: Mapping[str, Any] | None  # the stable Deployment
    canary: Mapping[str, Any] | None  # the canary Deployment
    pods: list[dict[str, Any]]  # both tracks' pods
    jobs: dict[str, JobState] = field(default_factory=dict)  # its analysis Jobs by name
    canary_fetch: FetchResult | None = None  # the canary pods' verification, when one reported


@dataclass(frozen=True)
class Run:
    """An analysis Job to create."""

    name: str
    kind: Literal["canary", "loadtest"]
    revision: str
    analysis: Analysis
    targets: list[str]
    baseline: list[str]


@dataclass(frozen=True)
class Event:
    warning: bool
    reason: str
    message: str


@dataclass
class Plan:
    """What to render and run, and what to report."""

    stable_spec: ModelDeploymentSpec  # what the stable children render from
    rollout: RolloutStatus
    canary_replicas: int | None = None  # None: no canary children (delete them)
    run: Run | None = None
    stale_jobs: list[str] = field(default_factory=list)  # unfinished analysis Jobs nobody waits for
    load_tests: list[AnalysisResult] | None = None
    events: list[Event] = field(default_factory=list)


def template_hash(deployment: Mapping[str, Any] | None) -> str | None:
    """The spec hash of a Deployment's pod template (what its current pods carry)."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    found = ((template.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    return str(found) if found else None


def ready_addresses(pods: list[dict[str, Any]], deployment: Mapping[str, Any] | None) -> list[str]:
    """`http://IP:PORT` of the ready, not terminating pods running `deployment`'s template."""
    wanted = template_hash(deployment)
    urls = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if (wanted and (meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION) == wanted and ready
                and not meta.get("deletionTimestamp") and status.get("podIP")):
            urls.append(f"http://{status['podIP']}:{SERVER_PORT}")
    return sorted(urls)


def job_name(ref: ObjectRef, kind: str, revision: str, step: int | None = None, started_at: str | None = None) -> str:
    """The analysis Job's name: the same for the same (revision, step, start), so a restart finds it."""
    if kind == "loadtest":
        return f"{ref.name[:NAME_PREFIX]}-loadtest-{revision[:10]}"
    attempt = hashlib.sha256(f"{revision}/{step}/{started_at}".encode()).hexdigest()[:6]
    return f"{ref.name[:NAME_PREFIX]}-canary-{revision[:8]}-{step}-{attempt}"


def _seconds_since(then: str | None, now: str) -> float:
    if not then:
        return 0.0
    parse = datetime.datetime.fromisoformat
    return (parse(now.replace("Z", "+00:00")) - parse(then.replace("Z", "+00:00"))).total_seconds()


def plan_rollout(
    spec: ModelDeploymentSpec,
    ref: ObjectRef,
    stored: ModelDeploymentSpec | None,
    desired: str,
    stable: str | None,
    observed: Observed,
    old: RolloutStatus | None,
    old_load_tests: list[AnalysisResult],
    now: str,
) -> Plan:
    """The next move of the rollout of `spec` (revision `desired`).

    Args:
        spec: the parsed spec.
        ref: the ModelDeployment.
        stored: the spec fields the stable Deployment records it runs (None: no stable Deployment yet).
        desired: the spec's revision.
        stable: the revision of `stored` (None with it).
        observed: the Deployments, pods, analysis Jobs.
        old: the stored status.rollout.
        old_load_tests: the stored status.loadTest.
        now: an RFC 3339 timestamp.
    """
    canary_strategy = spec.rollout.strategy == "Canary"
    if stored is None or stable is None or stable == desired or not canary_strategy:
        plan = _settle(spec, ref, desired, observed, old, canary_strategy)
    elif old is not None and old.phase == "RolledBack" and old.canary_revision == desired:
        plan = Plan(with_revision_of(spec, stored), old)  # stays rolled back until the spec changes
    else:
        plan = _canary_step(spec, ref, stored, desired, stable, observed, old, now)
    plan.stale_jobs = [name for name, job in observed.jobs.items()
                       if not job.finished and (plan.run is None or name != plan.run.name)
                       and name != plan.rollout.analysis_job and name != _pending_load_test(spec, ref, plan)]
    if spec.load_test is not None:
        _load_test(spec, ref, plan, observed, old_load_tests, now)
    return plan


def _settle(spec: ModelDeploymentSpec, ref: ObjectRef, desired: str, observed: Observed,
            old: RolloutStatus | None, canary_strategy: bool) -> Plan:
    """The spec's revision goes (or went) to the stable Deployment; a canary left over goes once it is there."""
    strategy = spec.rollout.strategy
    complete = rolled_out(observed.stable, desired)
    promoting = old is not None and old.canary_revision == desired and old.active
    rollout = RolloutStatus(
        strategy=strategy,
        phase="Promoted" if complete else "Progressing",
        reason=reasons.PROMOTED if complete else reasons.ROLLOUT_PROGRESSING,
        stable_revision=desired if complete else deployment_revision(observed.stable),
        canary_revision=old.canary_revision if old and canary_strategy and old.canary_revision == desired else None,
        message=f"revision {desired} is stable" if complete else f"rolling the stable pods to revision {desired}",
        last_analysis=old.last_analysis if old and canary_strategy else None,
    )
    plan = Plan(spec, rollout)
    if observed.canary is not None and not complete:
        plan.canary_replicas = int((observed.canary.get("spec") or {}).get("replicas", 0) or 0)  # serves until then
    if complete and promoting:
        plan.events.append(Event(False, reasons.PROMOTED, f"revision {desired} promoted: the stable pods run it"))
    return plan


def _canary_step(spec: ModelDeploymentSpec, ref: ObjectRef, stored: ModelDeploymentSpec, desired: str, stable: str,
                 observed: Observed, old: RolloutStatus | None, now: str) -> Plan:
    """A canary of `desired` beside the stable `stable`: wait for its pods, analyse, step on, promote or roll back."""
    steps = spec.rollout.canary_steps()
    deadline = spec.rollout.progress_deadline_seconds
    resuming = old is not None and old.canary_revision == desired and old.active and old.step is not None
    step = min(old.step or 1, len(steps)) if resuming and old is not None else 1
    started = (old.step_started_at if resuming and old is not None else None) or now
    events = [] if resuming else [Event(False, reasons.CANARY_PROGRESSING,
                                        f"revision {desired} starts as a canary beside {stable} ({len(steps)} steps)")]
    current = steps[step - 1]
    name = job_name(ref, "canary", desired, step, started)
    running = with_revision_of(spec, stored)
    last = old.last_analysis if old is not None and old.canary_revision == desired else None

    def plan(phase: Phase, message: str, reason: str = reasons.CANARY_PROGRESSING, *, stable_spec: ModelDeploymentSpec
             = running, replicas: int | None = current.replicas, **changes: Any) -> Plan:
        fields = {"strategy": "Canary", "stable_revision": stable, "canary_revision": desired, "step": step,
                  "steps": len(steps), "step_started_at": started, "last_analysis": last, **changes}
        status = RolloutStatus(**fields, phase=phase, reason=reason, message=message)
        return Plan(stable_spec, status, replicas, events=events)

    def rolled_back(reason: str, message: str, **changes: Any) -> Plan:
        events.append(Event(True, reason, f"revision {desired} rolled back: {message}"))
        return plan("RolledBack", message, reason, replicas=None, **changes)

    job = observed.jobs.get(name)
    if job is not None and job.finished:
        result = judge(job.report, current.analysis.gates, revision=desired, version=spec.model.version, step=step,
                       job=name, finished_at=now, job_failed=job.failure)
        if not result.passed:
            reason = reasons.ANALYSIS_FAILED if job.report is None or job.report.error else reasons.ROLLED_BACK
            return rolled_back(reason, f"step {step}: {result.message}", last_analysis=result)
        events.append(Event(False, reasons.CANARY_PROGRESSING, f"step {step} of {len(steps)} passed: {result.message}"))
        if step < len(steps):
            replicas = steps[step].replicas
            return plan("Progressing", f"step {step} passed; scaling the canary to {replicas}", replicas=replicas,
                        last_analysis=result, step=step + 1, step_started_at=now)
        return plan("Progressing", f"all {len(steps)} steps passed; promoting revision {desired}",
                    stable_spec=spec, last_analysis=result)

    fetch = observed.canary_fetch
    if fetch is not None and fetch.status == "False" and fetch.reason in reasons.VERIFICATION:
        return rolled_back(fetch.reason, f"the canary's parameters failed verification: {fetch.message}")
    overdue = _seconds_since(started, now) > deadline
    analysing = f"step {step} of {len(steps)}: analysing {current.replicas} canary replicas"
    if job is not None:
        if overdue:
            return rolled_back(reasons.ANALYSIS_FAILED,
                               f"step {step}: the analysis did not finish within progressDeadlineSeconds ({deadline})")
        return plan("Analyzing", analysing, analysis_job=name)
    targets = ready_addresses(observed.pods, observed.canary)
    if rolled_out(observed.canary, desired) and len(targets) >= current.replicas:
        result_plan = plan("Analyzing", analysing, analysis_job=name)
        result_plan.run = Run(name, "canary", desired, current.analysis, targets,
                              ready_addresses(observed.pods, observed.stable))
        events.append(Event(False, reasons.CANARY_PROGRESSING,
                            f"step {step} of {len(steps)}: analysis {name} started on {len(targets)} canary pods"))
        return result_plan
    if overdue:
        return rolled_back(reasons.CANARY_NOT_READY, f"step {step}: {len(targets)} of {current.replicas} canary "
                           f"replicas ready after progressDeadlineSeconds ({deadline})")
    return plan("Progressing", f"step {step} of {len(steps)}: waiting for {current.replicas} canary replicas "
                f"({len(targets)} ready)")


def _pending_load_test(spec: ModelDeploymentSpec, ref: ObjectRef, plan: Plan) -> str | None:
    revision = plan.rollout.stable_revision
    return job_name(ref, "loadtest", revision) if spec.load_test is not None and revision else None


def _load_test(spec: ModelDeploymentSpec, ref: ObjectRef, plan: Plan, observed: Observed,
               old: list[AnalysisResult], now: str) -> None:
    """spec.loadTest: once the stable revision is rolled out, measure it once and keep the summary."""
    assert spec.load_test is not None
    plan.load_tests = list(old)
    revision = plan.rollout.stable_revision
    if plan.rollout.phase != "Promoted" or revision is None or any(t.revision == revision for t in old):
        return
    name = job_name(ref, "loadtest", revision)
    job = observed.jobs.get(name)
    if job is None:
        targets = ready_addresses(observed.pods, observed.stable)
        if targets:
            plan.run = Run(name, "loadtest", revision, spec.load_test, targets, [])
            plan.events.append(Event(False, "LoadTestStarted", f"load test {name} of revision {revision} started"))
        return
    if not job.finished:
        return
    result = judge(job.report, spec.load_test.gates, revision=revision, version=plan.stable_spec.model.version,
                   step=None, job=name, finished_at=now, job_failed=job.failure)
    plan.load_tests = [*old, result][-LOAD_TEST_HISTORY:]
    plan.events.append(Event(not result.passed, "LoadTestFinished" if result.passed else reasons.LOAD_TEST_FAILED,
                             f"load test of revision {revision}: {result.message}"))


def job_states(jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> dict[str, JobState]:
    """Analysis Jobs (not being deleted) by name: finished or not, their pod's report, why they failed."""
    reports: dict[str, AnalysisReport | None] = {}
    for pod in pods:
        job = ((pod.get("metadata") or {}).get("labels") or {}).get("job-name")
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if job and terminated:
                reports[job] = AnalysisReport.parse(terminated.get("message")) or reports.get(job)
    states = {}
    for job in jobs:
        meta = job.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        done = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []
                if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"}
        failed = done.get("Failed")
        failure = f"the Job failed: {failed.get('reason')}: {failed.get('message', '')}".strip() if failed else None
        states[meta["name"]] = JobState(meta["name"], bool(done), reports.get(meta["name"]), failure)
    return states


def recorded_spec(deployment: Mapping[str, Any] | None) -> ModelDeploymentSpec | None:
    """The spec fields a stable Deployment records it runs (None: none, or not parseable any more)."""
    text = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(REVISION_SPEC_ANNOTATION)
    if not text:
        return None
    try:
        return parse_spec(json.loads(text))
    except (ValueError, SpecError):
        return None


def parse_rollout(status: Mapping[str, Any] | None) -> tuple[RolloutStatus | None, list[AnalysisResult]]:
    """The stored status.rollout and status.loadTest (what does not parse is treated as absent)."""
    status = status or {}
    try:
        rollout = RolloutStatus.model_validate(status["rollout"]) if status.get("rollout") else None
    except ValueError:
        rollout = None
    tests = []
    for entry in status.get("loadTest") or []:
        try:
            tests.append(AnalysisResult.model_validate(entry))
        except ValueError:
            continue
    return rollout, tests
