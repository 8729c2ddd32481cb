"""kopf handlers: when to reconcile, nothing about how to render or call the API.

Reconcile is level-based: a ModelDeployment's create/update/resume and the operator's own tick
(every ten seconds, for objects nothing reconciled for five minutes) run `reconcile()`, which
renders every child, adopts and applies it (server-side apply), deletes optional children no
longer wanted, and computes the status. Watch events on children re-apply
only when a child differs from what this process last wrote (deleted or edited by hand);
Deployment status changes and pods whose fetch container reports refresh only the status.
A ModelDeployment with `strategy: Canary` or `spec.loadTest` is reconciled in full at every
such event, a finished analysis Job, and at every tick while a canary is in progress: the
rollout state machine (`rollout.plan_rollout`, pure) decides what the stable and canary
Deployments run and which analysis Job to create. Errors are mapped to kopf's retry semantics
only here. No kopf timer, no deletion handler: so no finalizer, and a ModelDeployment deleted
while no operator runs goes at once (its children by garbage collection).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import kopf
from kubernetes.client.exceptions import ApiException

from model_operator import conditions as cond
from model_operator import metrics, rollout, trust
from model_operator.admission import Evidence
from model_operator.kube import Kube
from model_operator.render import (
    ANALYSIS_APP,
    ObjectRef,
    deployment_name,
    render_all,
    render_analysis_job,
    render_canary,
    revision,
    selector_labels,
    unwanted_children,
)
from model_operator.status import (
    compute_status,
    fetch_result,
    fingerprint,
    reports_fetch,
    spec_error_status,
    status_changed,
    stopped_being_ready,
)
from modeldeploy.contract import reasons
from modeldeploy.contract.api import ANALYSIS_LABEL, GROUP, MANAGED_BY, PLURAL, VERSION
from modeldeploy.contract.pod import HEALTH_READY, SERVER_PORT, ReadinessReport
from modeldeploy.contract.rollout import ROLLOUT_HEALTHY, AnalysisResult, RolloutStatus
from modeldeploy.contract.spec import ModelDeploymentSpec, SpecError, parse_spec, with_revision_of
from modeldeploy.contract.status import PARAMETERS_VERIFIED, READY, ModelDeploymentStatus

RESYNC_SECONDS = 300.0
RETRY_SECONDS = 10.0
ROLLOUT_TICK_SECONDS = 10.0
READINESS_TIMEOUT = 2.0
API_THREADS = 16
CONCURRENT_RECONCILES = 8
OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY}
CHILD_RESOURCES = (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
)


@dataclass
class Outcome:
    """What one reconcile did: the new status, a spec problem if any, the children as stored."""

    status: ModelDeploymentStatus
    problem: str | None = None
    applied: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    events: list[rollout.Event] = field(default_factory=list)
    changed: int = 0  # children created or changed by this reconcile


@dataclass
class State:
    """What one operator process keeps between handler calls (kopf's memo holds it as `memo.state`)."""

    kube: Kube
    server_image: str | None
    namespace: str  # the operator's own: where ModelTrustPolicies' Secrets and ConfigMaps live
    # one reconcile per ModelDeployment (by uid) at a time, and few at once
    locks: collections.defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: collections.defaultdict(asyncio.Lock)
    )
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENT_RECONCILES))
    # owner uid -> (kind, name) -> fingerprint of the child as this process last wrote it
    applied: collections.defaultdict[str, dict[tuple[str, str], tuple[str, str]]] = field(
        default_factory=lambda: collections.defaultdict(dict))
    # uid -> when this process last reconciled it (time.monotonic), for the resync tick
    reconciled_at: dict[str, float] = field(default_factory=dict)
    # uid -> the status as stored by this process's last write: newer than a body that lags behind it
    statuses: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    # uid -> the rollout status this process last decided: newer than a body that lags behind the writes
    rollouts: dict[str, tuple[RolloutStatus | None, list[AnalysisResult]]] = field(
        default_factory=dict)
    metrics: metrics.OperatorMetrics = field(default_factory=metrics.OperatorMetrics)

    @contextlib.asynccontextmanager
    async def turn(self, uid: str) -> AsyncIterator[None]:
        """Hold the ModelDeployment's lock and a slot (counted as waiting until both are held)."""
        async with contextlib.AsyncExitStack() as held:
            with self.metrics.reconciles_waiting.track_inprogress():
                await held.enter_async_context(self.locks[uid])
                await held.enter_async_context(self.slots)
            yield

    def written(self, child: Mapping[str, Any]) -> tuple[str, str] | None:
        """The fingerprint of `child` as this process last wrote it (found through its controller)."""
        meta = child["metadata"]
        owner = next((ref["uid"] for ref in meta.get("ownerReferences") or [] if ref.get("controller")), "")
        return self.applied[owner].get((child["kind"], meta["name"])) if owner in self.applied else None

    def forget(self, uid: str) -> None:
        """Drop what this process keeps about a deleted ModelDeployment."""
        for kept in (self.applied, self.locks, self.reconciled_at, self.statuses, self.rollouts):
            kept.pop(uid, None)


def _state(memo: kopf.Memo) -> State:
    state: State = memo.state
    return state


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations (the status schema is ours), connect, join the peering."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    memo.metrics = memo.get("metrics") or metrics.OperatorMetrics()
    if memo.get("metrics_port"):
        memo.stop_metrics = memo.metrics.serve(memo.metrics_port, memo.get("metrics_address") or "0.0.0.0")
    # Few reconciles at a time, each finishing quickly, beat all of them interleaving their calls.
    memo.state = State(await Kube.connect(), memo.get("server_image"), memo.get("namespace") or "modeldeploy-system",
                       metrics=metrics.of(memo))
    if not settings.peering.standalone:
        await memo.state.kube.ensure_peering(settings.peering.name)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(API_THREADS, thread_name_prefix="kube"))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if ticker := memo.get("ticker"):
        ticker.cancel()
    _state(memo).kube.close()
    if memo.get("stop_metrics"):
        memo.stop_metrics()


async def resolve_policies(state: State, namespace_labels: dict[str, str] | None = None,
                           listed: list[tuple[str, dict[str, Any]]] | None = None) -> list[trust.ResolvedPolicy]:
    """Every ModelTrustPolicy (`listed`, else listed now) selecting a namespace with these labels
    (if given), with its material read."""
    resolved = []
    for name, raw in listed if listed is not None else await state.kube.list_trust_policies():
        try:
            policy = trust.parse_policy(name, raw)
        except ValueError:
            continue  # stored under an older schema; its status says nothing new
        if namespace_labels is not None and not policy.namespace_selector.matches(namespace_labels):
            continue
        data: dict[tuple[str, str], dict[str, str] | None] = {}
        for kind, name in {signer.material().source for signer in policy.signers}:  # each object read once
            data[(kind, name)] = await state.kube.read_data(kind, state.namespace, name)

        def read(ref: Any, data: dict[tuple[str, str], dict[str, str] | None] = data) -> str | None:
            return (data.get(ref.source) or {}).get(ref.key)

        resolved.append(trust.resolve_policy(name, policy, read))
    return resolved


async def trust_decision(state: State, spec: ModelDeploymentSpec, namespace: str) -> trust.TrustDecision:
    """The signers a ModelDeployment in `namespace` must be signed by (see `trust.decide`)."""
    labels, listed = await asyncio.gather(state.kube.namespace_labels(namespace), state.kube.list_trust_policies())
    return trust.decide(spec, await resolve_policies(state, labels, listed))


async def _apply_children(
    state: State,
    body: kopf.Body,
    children: list[dict[str, Any]],
    ref: ObjectRef,
    canary: bool = False,
) -> tuple[dict[tuple[str, str], Mapping[str, Any]], int]:
    """Apply every child, delete unwanted optional ones; remember what was written for drift checks.

    The ConfigMaps go first (a new pod must read the config of its own revision), then the
    rest and the deletions all at once: a reconcile takes two round trips, not one per child.

    Returns:
        The children as stored, and how many of them this apply created, changed or deleted.
    """
    applied: dict[tuple[str, str], Mapping[str, Any]] = {}
    written, changed = state.applied[body["metadata"]["uid"]], 0

    async def apply(child: dict[str, Any]) -> None:
        nonlocal changed
        stored = await state.kube.apply(child)
        key = (child["kind"], child["metadata"]["name"])
        applied[key] = stored
        before, written[key] = written.get(key), fingerprint(stored)
        state.metrics.child_applied(child["kind"], before, written[key])
        changed += before != written[key]

    async def delete(api_version: str, kind: str, name: str) -> None:
        nonlocal changed
        written.pop((kind, name), None)
        if await state.kube.delete_owned(api_version, kind, name, ref.namespace, body["metadata"]["uid"]):
            kopf.info(body, reason="Deleted", message=f"{kind} {name} is no longer wanted by the spec")
            changed += 1

    configs = [child for child in children if child["kind"] == "ConfigMap"]
    await _all(*(apply(child) for child in configs))
    await _all(*(apply(child) for child in children if child not in configs),
               *(delete(*unwanted) for unwanted in unwanted_children(children, ref, canary)))
    return applied, changed


async def _all(*calls: Coroutine[Any, Any, None]) -> None:
    """Run `calls` concurrently; once all have finished, raise the first failure (as a sequence would)."""
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def reconcile(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    trigger: str,
    **options: Any,
) -> Outcome:
    """`_reconcile(body, memo, logger, **options)`, its status written and its events posted, timed
    and counted by `trigger` and result (`metrics`).

    It holds the ModelDeployment's turn until the status is written, so statuses are stored in the
    order they were computed (a slower, older one never overwrites a newer one). A failure makes the
    ModelDeployment due at the next tick: event handlers are not retried by kopf.
    """
    state = _state(memo)
    uid = body["metadata"]["uid"]
    with state.metrics.reconciling(trigger) as result:
        async with state.turn(uid):
            try:
                outcome = await _reconcile(body, memo, logger, **options)
                await _write_status(state, body, outcome)
            except Exception:
                state.reconciled_at.pop(uid, None)
                raise
        result(metrics.reconcile_result(outcome.problem, outcome.changed))
    return outcome


async def _write_status(state: State, body: kopf.Body, outcome: Outcome) -> None:
    """Post the outcome's events; write its status unless both the body and this process's last
    write already hold it (the body may lag behind that write; another peer may have written since)."""
    uid, meta = body["metadata"]["uid"], body["metadata"]
    last = state.statuses.get(uid)
    _post_events(body, outcome, _known_status(state, body))
    if status_changed(body.get("status"), outcome.status) or (last and status_changed(last, outcome.status)):
        stored = await state.kube.patch_status(meta["name"], meta["namespace"], outcome.status.patch())
        if stored is not None:
            state.statuses[uid] = stored


async def _reconcile(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    *,
    apply: bool = True,
    deployment: Mapping[str, Any] | None = None,
    changed_child: Mapping[str, Any] | None = None,
) -> Outcome:
    """Render, adopt and apply every child of `body` (or only read them), then compute its status
    (the caller holds the ModelDeployment's turn).

    Args:
        body: the ModelDeployment.
        memo: the operator's memo, holding its `State`.
        logger: where to log.
        apply: apply the children; otherwise only read the Deployment and pods for the status.
        deployment: the Deployment as just seen in a watch event, to save reading it.
        changed_child: a child seen in a watch event; apply only if it differs from what
            this process last wrote (checked under the lock, after any apply in flight).

    Raises:
        kopf.TemporaryError: the API server refused for a reason that may pass (conflict, 5xx).
    """
    meta = body["metadata"]
    ref = ObjectRef(meta["name"], meta["namespace"])
    generation = int(meta.get("generation", 0))
    state = _state(memo)
    old_conditions = cond.parse_conditions(_known_status(state, body).get("conditions") or [])
    kube = state.kube
    changed = 0
    started = state.reconciled_at[meta["uid"]] = time.monotonic()
    old_rollout, old_tests = state.rollouts.get(meta["uid"]) or rollout.parse_rollout(body.get("status"))
    if changed_child is not None and state.written(changed_child) == fingerprint(changed_child):
        apply = False
    try:
        spec = parse_spec(body["spec"])
        decision = await trust_decision(state, spec, ref.namespace)
        if decision.problem:
            message = decision.problem
            return Outcome(spec_error_status(generation, old_conditions, message, _now(),
                                             decision.reason or reasons.SPEC_INVALID), message)
        canary_view = spec.rollout.strategy == "Canary" or bool(old_rollout and old_rollout.canary_revision
                                                                and old_rollout.active)
        apply = apply or canary_view or spec.load_test is not None  # the rollout moves on at every event
        desired = revision(spec, ref, state.server_image, decision.bundle)
        jobs = await _analysis_jobs(kube, ref) if canary_view or spec.load_test else {}
        plan: rollout.Plan | None = None
        if canary_view:
            seen = await kube.get("apps/v1", "Deployment", deployment_name(ref), ref.namespace)
            canary = await kube.get("apps/v1", "Deployment", deployment_name(ref.canary()), ref.namespace)
            stored = rollout.recorded_spec(seen)
            stable = revision(with_revision_of(spec, stored), ref, state.server_image,
                              decision.bundle) if stored else None
            pods = await kube.list_pods(ref.namespace, _selector(selector_labels(ref)))
            canary_hash = rollout.template_hash(canary)
            canary_fetch = fetch_result(pods, canary_hash) if canary_hash else None
            observed = rollout.Observed(seen, canary, pods, jobs, canary_fetch)
            plan = rollout.plan_rollout(spec, ref, stored, desired, stable, observed, old_rollout, old_tests,
                                        _now())
        children = render_all(plan.stable_spec if plan else spec, ref, state.server_image, decision.bundle)
        if plan and plan.canary_replicas:
            children += render_canary(spec, ref, state.server_image, decision.bundle, plan.canary_replicas)
        kopf.adopt(children, owner=body)
        applied: dict[tuple[str, str], Mapping[str, Any]] = {}
        canary_seen = canary_view and observed.canary is not None  # only then is there a canary to delete
        if not apply and deployment is None:
            deployment = await kube.get("apps/v1", "Deployment", ref.name, ref.namespace)
        if apply or deployment is None:
            applied, changed = await _apply_children(state, body, children, ref, canary_seen)
            deployment = applied[("Deployment", ref.name)]
        if plan is None:
            pods = await kube.list_pods(ref.namespace, _selector(deployment["spec"]["selector"]["matchLabels"]))
            observed = rollout.Observed(deployment, None, pods, jobs)
            plan = rollout.plan_rollout(spec, ref, None, desired, None, observed, old_rollout, old_tests, _now())
        await _run_analyses(kube, body, plan, spec, ref, state.server_image)
        state.rollouts[meta["uid"]] = (plan.rollout, plan.load_tests or [])
    except SpecError as err:
        logger.warning("Invalid spec: %s", err)
        return Outcome(spec_error_status(generation, old_conditions, str(err), _now()), str(err))
    except ApiException as err:
        if err.status in (409, 429) or (err.status or 500) >= 500:
            raise kopf.TemporaryError(f"API server: {err.status} {err.reason}", delay=RETRY_SECONDS) from err
        message = f"the API server rejected a child: {_api_message(err)}"
        logger.warning("%s", message)
        rejected = spec_error_status(generation, old_conditions, message, _now(), reasons.CHILD_REJECTED)
        return Outcome(rejected, message)
    evidence = Evidence.parse(dict(meta.get("annotations") or {}))
    admitted_at = evidence.admitted_at if evidence else None
    reports = await readiness_reports(pods)
    status = compute_status(plan.stable_spec, ref, generation, old_conditions, dict(deployment), pods, _now(),
                            admitted_at, reports, plan.rollout, plan.load_tests)
    logger.info("Reconciled in %.3fs (%d children applied).", time.monotonic() - started, len(applied))
    return Outcome(status, None, applied, plan.events, changed)


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


async def _analysis_jobs(kube: Kube, ref: ObjectRef) -> dict[str, rollout.JobState]:
    """The ModelDeployment's analysis Jobs, with their pods' reports."""
    selector = _selector({"app.kubernetes.io/name": ANALYSIS_APP, "app.kubernetes.io/instance": ref.name})
    jobs = await kube.list_jobs(ref.namespace, selector)
    return rollout.job_states(jobs, await kube.list_pods(ref.namespace, selector) if jobs else [])


async def _run_analyses(kube: Kube, body: kopf.Body, plan: rollout.Plan, spec: ModelDeploymentSpec, ref: ObjectRef,
                        default_image: str | None) -> None:
    """Create the analysis Job the plan asks for (unless it exists) and delete the ones nobody waits for."""
    for name in plan.stale_jobs:
        await kube.delete_job(name, ref.namespace)
    run = plan.run
    if run is None:
        return
    job = render_analysis_job(spec, ref, default_image, run.name, run.analysis, run.kind, run.revision,
                              run.targets, run.baseline)
    kopf.adopt(job, owner=body)
    await kube.create(job)


async def readiness_reports(pods: list[dict[str, Any]]) -> dict[str, ReadinessReport]:
    """What the servers that stopped being ready say about why (their readiness answer), by pod name."""
    unready = [pod for pod in pods if stopped_being_ready(pod)]
    if not unready:
        return {}
    reports: dict[str, ReadinessReport] = {}
    async with httpx.AsyncClient(timeout=READINESS_TIMEOUT) as http:
        for pod in unready:
            url = f"http://{pod['status']['podIP']}:{SERVER_PORT}{HEALTH_READY}"
            try:
                reports[pod["metadata"]["name"]] = ReadinessReport.model_validate_json((await http.get(url)).content)
            except (httpx.HTTPError, ValueError):
                continue  # unreachable or not a report: the pod's conditions say what they can
    return reports


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        return str(err.reason)


def _known_status(state: State, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ModelDeployment's status as this process last wrote it, else as `body` holds it."""
    return state.statuses.get(body["metadata"]["uid"]) or body.get("status") or {}


def _post_events(body: kopf.Body, outcome: Outcome, known: Mapping[str, Any]) -> None:
    for event in outcome.events:
        (kopf.warn if event.warning else kopf.info)(body, reason=event.reason, message=event.message)
    old = cond.parse_conditions(known.get("conditions") or [])
    for condition in cond.transitions(old, outcome.status.conditions):
        if condition.type == ROLLOUT_HEALTHY:
            continue  # the rollout's own events say more
        bad = condition.status == "False" and condition.type in (READY, PARAMETERS_VERIFIED)
        post = kopf.warn if bad else kopf.info
        post(body, reason=condition.reason, message=f"{condition.type}={condition.status}: {condition.message}")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def spec_changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Apply a new or changed spec (and every existing one when the operator starts)."""
    outcome = await reconcile(body, memo, logger, "spec")
    if outcome.problem:
        raise kopf.PermanentError(outcome.problem)
    kopf.info(body, reason="Applied", message=f"generation {body.metadata.get('generation')} applied")


@kopf.on.event(GROUP, VERSION, PLURAL)
def model_deployment_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A ModelDeployment is gone: forget what this process kept about it (an event handler, so no finalizer)."""
    if type == "DELETED":
        _state(memo).forget(body.metadata.uid or "")


Owners = kopf.Index[tuple[str | None, str | None], dict[str, Any]]


@kopf.index(GROUP, VERSION, PLURAL)
def model_deployments(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str | None, str], Any]:
    """Every ModelDeployment as last seen by the watch, so child events need no extra read."""
    return {(namespace, name): dict(body)}


def _owner(body: kopf.Body, index: Owners) -> kopf.Body | None:
    name = body.metadata.labels.get("app.kubernetes.io/instance")
    found = list(index.get((body.metadata.namespace, name), ()))
    if not found or found[-1]["metadata"].get("deletionTimestamp"):
        return None
    return kopf.Body(cast(kopf.RawBody, found[-1]))


async def _refresh_owner(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    index: Owners,
    trigger: str,
    *,
    apply: bool,
    drift: str | None = None,
) -> None:
    owner = _owner(body, index)
    if owner is None:
        return
    seen = body if body["kind"] == "Deployment" and not apply else None
    outcome = await reconcile(owner, memo, logger, trigger, apply=apply, deployment=seen,
                              changed_child=body if drift == "edited" else None)
    if drift and (body["kind"], body.metadata.name) in outcome.applied:
        kopf.info(owner, reason="DriftRepaired", message=f"{body['kind']} {body.metadata.name} was {drift}; put back")
        _state(memo).metrics.drift_repairs.labels(body["kind"], drift).inc()


def _child_handler(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels=OWNED, id=f"child-{plural}")
    @metrics.events_counted(plural)
    async def child_changed(
        body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any,
    ) -> None:
        """A child changed: re-apply if it is not what we last wrote; refresh status on Deployment status."""
        if type is None:
            return
        model_deployments: Owners = kwargs["model_deployments"]  # kopf passes indexes by name
        if type == "DELETED":
            await _refresh_owner(body, memo, logger, model_deployments, "drift", apply=True, drift="deleted")
        elif _state(memo).written(body) != fingerprint(body):
            await _refresh_owner(body, memo, logger, model_deployments, "drift", apply=True, drift="edited")
        elif body["kind"] == "Deployment":
            await _refresh_owner(body, memo, logger, model_deployments, "child", apply=False)


for _resource in CHILD_RESOURCES:
    _child_handler(*_resource)


@kopf.on.event("", "v1", "pods", labels=OWNED,
               when=lambda body, **_: reports_fetch(body) or stopped_being_ready(body))
@metrics.events_counted("pods")
async def pod_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Refresh the owner's status when a pod's fetch container reports or its server stops being ready."""
    if type is not None:
        await _refresh_owner(body, memo, logger, kwargs["model_deployments"], "pod", apply=False)


@kopf.on.event("batch", "v1", "jobs", labels={ANALYSIS_LABEL: kopf.PRESENT})
@metrics.events_counted("jobs")
async def analysis_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger,
                           **kwargs: Any) -> None:
    """An analysis Job finished (or failed): judge it and move the rollout on."""
    conditions = (body.get("status") or {}).get("conditions") or []
    if type is not None and any(c.get("type") in ("Complete", "Failed") for c in conditions):
        await _refresh_owner(body, memo, logger, kwargs["model_deployments"], "analysis", apply=True)


def _canary_active(status: Mapping[str, Any] | None) -> bool:
    rollout_status = (status or {}).get("rollout") or {}
    return bool(rollout_status.get("canaryRevision")) and rollout_status.get("phase") in ("Progressing", "Analyzing")


def due(body: Mapping[str, Any], last_reconciled: float | None, now: float) -> bool:
    """Whether a tick reconciles `body`: a canary in progress (its deadlines pass without any event)
    or nothing reconciled it for RESYNC_SECONDS (a watch may have missed an edit; SSA no-ops are cheap)."""
    if body["metadata"].get("deletionTimestamp"):
        return False
    return _canary_active(body.get("status")) or last_reconciled is None or now - last_reconciled >= RESYNC_SECONDS


def leads(peering: Mapping[str, Any] | None, priority: int, now: datetime.datetime) -> bool:
    """Whether the peer of `priority` is the one kopf's peering lets act, by kopf's rule: no live peer
    has a higher priority, none other the same (peers with equal priorities all pause)."""
    live = [int(info["priority"]) for info in ((peering or {}).get("status") or {}).values()
            if isinstance(info, dict) and "priority" in info and _alive(info, now)]
    return all(other <= priority for other in live) and live.count(priority) <= 1


def _alive(peer: Mapping[str, Any], now: datetime.datetime) -> bool:
    """A peer's entry is live until `lastseen + lifetime` (kopf's own test)."""
    try:
        seen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
    except (KeyError, ValueError):
        return True
    seen = seen if seen.tzinfo else seen.replace(tzinfo=datetime.UTC)
    return seen + datetime.timedelta(seconds=int(peer.get("lifetime", 60))) > now


@kopf.on.startup()
async def start_ticking(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Tick without kopf timers: a timer would put a finalizer on every ModelDeployment, and an
    operator that is down could then never let one be deleted (its children need no cleanup:
    they are garbage-collected through their owner references)."""
    memo.ticker = asyncio.get_running_loop().create_task(
        _tick_forever(settings, memo, logger, kwargs["model_deployments"]))


async def _tick_forever(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger,
                        index: Owners) -> None:
    while True:
        await asyncio.sleep(ROLLOUT_TICK_SECONDS)
        state = _state(memo)
        try:
            if not settings.peering.standalone:
                peering = await state.kube.read_peering(settings.peering.name)
                if not leads(peering, settings.peering.priority, datetime.datetime.now(datetime.UTC)):
                    continue
            await reconcile_selected(memo, logger, index, _due_now(state))
        except Exception:  # the next tick tries again; a ticker that died would stop every canary
            logger.exception("tick failed")


Trigger = Callable[[Mapping[str, Any]], str | None]


def _due_now(state: State) -> Trigger:
    """Why a tick now reconciles a ModelDeployment (`rollout`, `resync`), or None: it is not due."""
    now = time.monotonic()

    def trigger(body: Mapping[str, Any]) -> str | None:
        if not due(body, state.reconciled_at.get(body["metadata"]["uid"]), now):
            return None
        return "rollout" if _canary_active(body.get("status")) else "resync"

    return trigger


async def reconcile_selected(memo: kopf.Memo, logger: kopf.Logger, index: Owners,
                             trigger: Trigger = lambda body: "trust") -> None:
    """Reconcile every ModelDeployment `trigger` names a reason for (by default all: a trust policy
    changed, its pods may verify with other signers), at most CONCURRENT_RECONCILES at once."""
    chosen = [(raw, why) for found in list(index.values()) for raw in list(found)
              if not raw["metadata"].get("deletionTimestamp") and (why := trigger(raw))]
    await asyncio.gather(*(_reconcile_seen(memo, logger, kopf.Body(cast(kopf.RawBody, raw)), why)
                           for raw, why in chosen))


async def _reconcile_seen(memo: kopf.Memo, logger: kopf.Logger, body: kopf.Body, trigger: str) -> None:
    """Reconcile a ModelDeployment as the index last saw it (its status and events written)."""
    try:
        await reconcile(body, memo, logger, trigger)
    except kopf.TemporaryError as err:
        logger.warning("reconcile of %s/%s postponed: %s", body.metadata.namespace, body.metadata.name, err)
