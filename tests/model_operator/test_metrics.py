"""The operator's metrics: results, outcomes and the wrappers around reconciles and admission handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devcluster.ports import free_port
from model_operator import metrics
from model_operator.metrics import OperatorMetrics, child_result, reconcile_result


def sample(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_reconcile_result_is_invalid_with_a_problem_else_applied_when_a_child_changed() -> None:
    assert reconcile_result("spec.replicas: not a number", 3) == metrics.INVALID
    assert reconcile_result(None, 1) == metrics.APPLIED
    assert reconcile_result(None, 0) == metrics.UNCHANGED


def test_child_result_compares_with_what_this_process_last_wrote() -> None:
    assert child_result(None, ("uid", "1")) == metrics.FIRST
    assert child_result(("uid", "1"), ("uid", "1")) == metrics.SAME
    assert child_result(("uid", "1"), ("uid", "2")) == metrics.CHANGED


def test_reconciling_counts_the_reported_result_and_times_it() -> None:
    m = OperatorMetrics()
    with m.reconciling("spec") as result:
        assert sample(m, "modeldeploy_operator_reconciles_in_flight") == 1
        result(metrics.APPLIED)
    assert sample(m, "modeldeploy_operator_reconciles_total", trigger="spec", result="applied") == 1
    assert sample(m, "modeldeploy_operator_reconcile_duration_seconds_count", trigger="spec") == 1
    assert sample(m, "modeldeploy_operator_reconciles_in_flight") == 0


def test_reconciling_counts_an_exception_as_an_error_and_reraises_it() -> None:
    m = OperatorMetrics()
    with pytest.raises(kopf.TemporaryError), m.reconciling("drift"):
        raise kopf.TemporaryError("API server: 409 Conflict", delay=10)
    assert sample(m, "modeldeploy_operator_reconciles_total", trigger="drift", result="error") == 1
    assert sample(m, "modeldeploy_operator_reconciles_in_flight") == 0


def test_verification_outcomes_by_reason_and_nothing_when_nothing_was_checked() -> None:
    m = OperatorMetrics()
    m.verification("SignatureValid", refused=False, warned=False)
    m.verification("UntrustedSigner", refused=True, warned=True)
    m.verification("SourceNotFound", refused=False, warned=True)
    m.verification(None, refused=False, warned=False)
    families = {s.labels["reason"]: s for f in text_string_to_metric_families(m.render().decode())
                for s in f.samples if s.name == "modeldeploy_operator_signature_verifications_total"}
    assert {reason: s.labels["outcome"] for reason, s in families.items()} == {
        "SignatureValid": "allowed", "UntrustedSigner": "refused", "SourceNotFound": "warned"}


def test_admission_observed_counts_allowed_refused_and_error() -> None:
    m = OperatorMetrics()

    @metrics.admission_observed("pin")
    async def handler(body: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        if body["refuse"]:
            raise kopf.AdmissionError("signed by nobody trusted", code=403)
        if body["crash"]:
            raise RuntimeError("bucket unreachable")

    memo = kopf.Memo(metrics=m)

    async def run() -> None:
        await handler(body={"refuse": False, "crash": False}, memo=memo)
        with pytest.raises(kopf.AdmissionError):
            await handler(body={"refuse": True, "crash": False}, memo=memo)
        with pytest.raises(RuntimeError):
            await handler(body={"refuse": False, "crash": True}, memo=memo)

    asyncio.run(run())
    for outcome in ("allowed", "refused", "error"):
        assert sample(m, "modeldeploy_operator_admission_reviews_total", webhook="pin", outcome=outcome) == 1
    assert sample(m, "modeldeploy_operator_admission_review_duration_seconds_count", webhook="pin") == 3


def test_events_counted_counts_every_event_the_handler_receives() -> None:
    m = OperatorMetrics()
    seen: list[str | None] = []

    @metrics.events_counted("pods")
    async def handler(type: str | None, memo: kopf.Memo, **_: Any) -> None:
        seen.append(type)

    asyncio.run(handler(type="MODIFIED", memo=kopf.Memo(metrics=m)))
    assert seen == ["MODIFIED"]
    assert sample(m, "modeldeploy_operator_watch_events_total", resource="pods") == 1


def test_serve_answers_prometheus_text_on_the_port_until_stopped() -> None:
    m = OperatorMetrics()
    m.drift_repairs.labels("ConfigMap", "deleted").inc()
    port = free_port()
    stop = m.serve(port, "127.0.0.1")
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        stop()
    assert answer.status_code == 200
    assert 'modeldeploy_operator_drift_repairs_total{cause="deleted",kind="ConfigMap"} 1.0' in answer.text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_serve_on_a_port_in_use_fails_clearly() -> None:
    m = OperatorMetrics()
    port = free_port()
    stop = m.serve(port, "127.0.0.1")
    try:
        with pytest.raises(OSError, match="in use"):
            OperatorMetrics().serve(port, "127.0.0.1")
    finally:
        stop()
