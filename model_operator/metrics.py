"""The operator's Prometheus metrics, in a registry of its own, served on `--metrics-port`.

Owns the metric families and the few wrappers that feed them (a reconcile, an admission
review, a watch event), so handlers only wrap; it never talks to the API server. kopf has no
public queue API, so the "queue" is measured where this process holds it: reconciles waiting
for their ModelDeployment's lock or a free slot, and reconciles running.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import kopf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# reconcile results
APPLIED: Final = "applied"  # at least one child was created or changed
UNCHANGED: Final = "unchanged"  # every child was already as rendered (or only the status was read)
INVALID: Final = "invalid"  # the spec, its trust or a child was refused: not retried until the spec changes
ERROR: Final = "error"  # an exception: kopf retries

# what one child apply did, from the stored object's fingerprint
CHANGED: Final = "changed"
SAME: Final = "unchanged"
FIRST: Final = "first"  # this process had not written it before (created, or first apply since start)

# admission outcomes
ALLOWED: Final = "allowed"
REFUSED: Final = "refused"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


class OperatorMetrics:
    """The operator's metric families (one instance per process, kept in kopf's memo as `memo.metrics`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "modeldeploy_operator_reconciles", "Reconciles of a ModelDeployment, by trigger and result.",
            ["trigger", "result"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "modeldeploy_operator_reconcile_duration_seconds",
            "Reconcile duration (including the wait for its lock and slot), by trigger.",
            ["trigger"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.reconciles_waiting = Gauge(
            "modeldeploy_operator_reconciles_waiting",
            "Reconciles waiting for their ModelDeployment's lock or a free slot.", registry=self.registry)
        self.reconciles_in_flight = Gauge(
            "modeldeploy_operator_reconciles_in_flight", "Reconciles in progress (waiting or running).",
            registry=self.registry)
        self.events = Counter(
            "modeldeploy_operator_watch_events", "Watch events received by the child, pod and Job handlers.",
            ["resource"], registry=self.registry)
        self.children_applied = Counter(
            "modeldeploy_operator_children_applied", "Server-side applies of a child, by kind and what they did.",
            ["kind", "result"], registry=self.registry)
        self.drift_repairs = Counter(
            "modeldeploy_operator_drift_repairs",
            "Children someone else deleted or edited and the operator put back, by kind and cause.",
            ["kind", "cause"], registry=self.registry)
        self.admission_reviews = Counter(
            "modeldeploy_operator_admission_reviews", "Admission reviews answered, by webhook and outcome.",
            ["webhook", "outcome"], registry=self.registry)
        self.admission_seconds = Histogram(
            "modeldeploy_operator_admission_review_duration_seconds", "Admission review latency, by webhook.",
            ["webhook"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.verifications = Counter(
            "modeldeploy_operator_signature_verifications",
            "Signature checks at admission, by reason code (SignatureValid when verified) and outcome "
            "(allowed, warned: admitted with a warning, refused).", ["reason", "outcome"], registry=self.registry)

    @contextmanager
    def reconciling(self, trigger: str) -> Iterator[Callable[[str], None]]:
        """Time one reconcile and count it; the body reports its result through the yielded callable.

        An exception (or no report) counts as `error`.
        """
        results: list[str] = []
        started = time.perf_counter()
        self.reconciles_in_flight.inc()
        try:
            yield results.append
        except BaseException:
            results.append(ERROR)
            raise
        finally:
            self.reconciles_in_flight.dec()
            self.reconciles.labels(trigger, results[-1] if results else ERROR).inc()
            self.reconcile_seconds.labels(trigger).observe(time.perf_counter() - started)

    def child_applied(self, kind: str, before: object | None, after: object) -> None:
        """Count one apply: `before` is what this process last wrote (None: nothing), `after` what is stored."""
        self.children_applied.labels(kind, child_result(before, after)).inc()

    def verification(self, reason: str | None, refused: bool, warned: bool) -> None:
        """Count one signature check at admission (`reason` None: nothing was checked)."""
        if reason is not None:
            self.verifications.labels(reason, REFUSED if refused else "warned" if warned else ALLOWED).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, address: str) -> Callable[[], None]:
        """Serve /metrics on ADDRESS:PORT in a thread; returns what stops it."""
        server, thread = start_http_server(port, address, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop


def reconcile_result(problem: str | None, changed: int) -> str:
    """A finished reconcile's result label: INVALID with a problem, APPLIED if a child changed, else UNCHANGED."""
    if problem is not None:
        return INVALID
    return APPLIED if changed else UNCHANGED


def child_result(before: object | None, after: object) -> str:
    """FIRST when this process had not written the child, else CHANGED or SAME (fingerprints compared)."""
    if before is None:
        return FIRST
    return SAME if before == after else CHANGED


def of(memo: kopf.Memo) -> OperatorMetrics:
    """The process's metrics in kopf's memo (`memo.metrics`)."""
    metrics: OperatorMetrics = memo.metrics
    return metrics


def admission_observed(webhook: str) -> Callable[[Handler], Handler]:
    """Decorate a kopf admission handler: count its outcome (allowed, refused: `kopf.AdmissionError`, error)
    and time it."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def observed(*args: Any, **kwargs: Any) -> Any:
            metrics = of(kwargs["memo"])
            outcome = ERROR
            started = time.perf_counter()
            try:
                result = await handler(*args, **kwargs)
                outcome = ALLOWED
                return result
            except kopf.AdmissionError:
                outcome = REFUSED
                raise
            finally:
                metrics.admission_reviews.labels(webhook, outcome).inc()
                metrics.admission_seconds.labels(webhook).observe(time.perf_counter() - started)

        return observed  # type: ignore[return-value]

    return decorate


def events_counted(resource: str) -> Callable[[Handler], Handler]:
    """Decorate a kopf event handler: count every event it receives (what it reconciles counts by trigger)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            of(kwargs["memo"]).events.labels(resource).inc()
            return await handler(*args, **kwargs)

        return counted  # type: ignore[return-value]

    return decorate
