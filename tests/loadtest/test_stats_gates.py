"""Percentiles, summaries and SLO gates (pure)."""

from __future__ import annotations

import math

import pytest

from modeldeploy.loadtest.gates import Gates, evaluate_gates
from modeldeploy.loadtest.stats import Recorder, load_figures, percentile, summarize


def recorded(latencies_ms: list[float], errors: int = 0, http_errors: int = 0) -> Recorder:
    recorder = Recorder()
    for i, ms in enumerate(latencies_ms):
        recorder.response(i / len(latencies_ms) * 2, ms / 1000, 200)
    for _ in range(http_errors):
        recorder.response(1.5, 0.001, 503, b'{"type":"ModelNotReady"}')
    for _ in range(errors):
        recorder.error(1.5, "ConnectionRefusedError", "refused")
    return recorder


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (1, 50, 99, 100)] == [1, 50, 99, 100]
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summary_counts_rates_and_timeline() -> None:
    stats = summarize(recorded([float(v) for v in range(1, 101)], errors=2, http_errors=3), duration_s=2.0)
    assert (stats.requests, stats.failures) == (105, 5)
    assert stats.rps == pytest.approx(52.5)
    assert stats.error_rate == pytest.approx(5 / 105)
    assert stats.latency_ms.p50 == pytest.approx(49.0)  # rank 52 of 103: three extra 1 ms answers shift it by 3
    assert stats.latency_ms.max == pytest.approx(100.0)
    assert stats.statuses == {"200": 100, "503": 3}
    assert stats.errors == {"HTTP 503": 3, "ConnectionRefusedError": 2}
    assert "ModelNotReady" in stats.error_samples["HTTP 503"]
    assert [s.t for s in stats.timeline] == [0, 1]
    assert sum(s.requests for s in stats.timeline) == 105
    assert stats.timeline[1].failures == 5


def test_timeline_has_a_point_for_every_second_even_idle_ones() -> None:
    recorder = Recorder()
    recorder.response(0.5, 0.01, 200)
    recorder.response(3.2, 0.02, 200)
    timeline = summarize(recorder, 4.0).timeline
    assert [s.requests for s in timeline] == [1, 0, 0, 1]
    assert math.isnan(timeline[1].p99_ms)


def test_gates_pass_when_within_limits() -> None:
    stats = summarize(recorded([10.0] * 100), 1.0)
    assert evaluate_gates(stats, Gates(p99_ms=10.0, max_error_rate=0.0, min_rps=100.0)) == []
    assert evaluate_gates(stats, Gates()) == []


def test_each_gate_fails_on_its_own() -> None:
    stats = summarize(recorded([10.0] * 98 + [200.0, 300.0], errors=1), 2.0)
    failures = evaluate_gates(stats, Gates(p99_ms=100.0, max_error_rate=0.001, min_rps=1000.0))
    assert [f.gate for f in failures] == ["p99_ms", "max_error_rate", "min_rps"]
    assert failures[0].actual == pytest.approx(200.0)
    assert failures[1].actual == pytest.approx(1 / 101)
    assert failures[2].actual == pytest.approx(50.5)
    assert "under the minimum" in failures[2].message and "over the limit" in failures[0].message


def test_p99_gate_fails_when_nothing_was_answered() -> None:
    stats = summarize(recorded([], errors=5), 1.0)
    failures = evaluate_gates(stats, Gates(p99_ms=100.0))
    assert [f.gate for f in failures] == ["p99_ms"]
    assert failures[0].actual is None and failures[0].message == "p99_ms: nothing measured (limit 100)"


def test_load_figures_are_the_contracts() -> None:
    figures = load_figures(summarize(recorded([10.0] * 99 + [50.0], errors=1), 2.0))
    assert (figures.requests, figures.failures, figures.rps) == (101, 1, 50.5)
    assert (figures.p50_ms, figures.p99_ms) == (pytest.approx(10.0), pytest.approx(10.0))
    assert figures.error_rate == pytest.approx(1 / 101)
    empty = load_figures(summarize(Recorder(), 1.0))
    assert (empty.p50_ms, empty.p99_ms, empty.requests, empty.error_rate) == (None, None, 0, 0.0)
