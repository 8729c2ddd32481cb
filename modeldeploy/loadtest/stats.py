"""Results of a load test: the recorder the engine writes to, and the summary made from it.

Owns counting and percentiles, and `load_figures`, the summary as the contract's `LoadFigures`
(what the gates judge and the analysis report carries). Pure: no sockets, no terminal, no files.
Latency percentiles cover every request that got an HTTP response (any status);
transport errors (refused, reset, timeout) count as failures without a latency.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from modeldeploy.contract.rollout import LoadFigures

PERCENTILES = (50, 90, 95, 99)


@dataclass
class Bucket:
    """The requests that completed within one second of the test."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    failures: int = 0
    transport_errors: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.transport_errors


class Recorder:
    """Collects one sample per request, bucketed by the second it completed in."""

    def __init__(self) -> None:
        self.buckets: dict[int, Bucket] = {}
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: dict[str, str] = {}

    def _bucket(self, elapsed: float) -> Bucket:
        second = max(0, int(elapsed))
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = Bucket()
        return bucket

    def response(self, elapsed: float, latency: float, status: int, body: bytes = b"") -> None:
        """A request got an HTTP response; a status of 400 or more is a failure."""
        bucket = self._bucket(elapsed)
        bucket.latencies.append(latency)
        self.statuses[status] += 1
        if status >= 400:
            bucket.failures += 1
            kind = f"HTTP {status}"
            self.errors[kind] += 1
            self.error_samples.setdefault(kind, body[:300].decode("utf-8", "replace"))

    def error(self, elapsed: float, kind: str, message: str = "") -> None:
        """A request failed without a response (refused, reset, timeout, not sent)."""
        bucket = self._bucket(elapsed)
        bucket.failures += 1
        bucket.transport_errors += 1
        self.errors[kind] += 1
        self.error_samples.setdefault(kind, message)


@dataclass(frozen=True)
class Latency:
    """Latency figures in milliseconds."""

    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class Second:
    """One point of the timeline: the requests that completed in second `t`."""

    t: int
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Stats:
    """The summary of a load test."""

    duration_s: float
    requests: int
    failures: int
    latency_ms: Latency
    statuses: dict[str, int]
    errors: dict[str, int]
    error_samples: dict[str, str]
    timeline: list[Second]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(rps=self.rps, error_rate=self.error_rate)
        return data


def percentile(sorted_values: list[float] | array[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(pct / 100 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def latency_summary(latencies_s: list[float]) -> Latency:
    """Min, mean, percentiles and max in milliseconds of latencies given in seconds."""
    values = sorted(latencies_s)
    if not values:
        nan = math.nan
        return Latency(nan, nan, nan, nan, nan, nan, nan)
    p50, p90, p95, p99 = (percentile(values, p) * 1000 for p in PERCENTILES)
    return Latency(values[0] * 1000, sum(values) / len(values) * 1000, p50, p90, p95, p99, values[-1] * 1000)


def second_summary(t: int, bucket: Bucket) -> Second:
    """One timeline point from one bucket."""
    values = sorted(bucket.latencies)
    p50, p95, p99 = (percentile(values, p) * 1000 for p in (50, 95, 99))
    return Second(t, bucket.requests, bucket.failures, p50, p95, p99)


def summarize(recorder: Recorder, duration_s: float) -> Stats:
    """The summary of everything recorded over a test that ran `duration_s` seconds."""
    latencies: list[float] = []
    for bucket in recorder.buckets.values():
        latencies.extend(bucket.latencies)
    last = max(recorder.buckets, default=-1)
    timeline = [second_summary(t, recorder.buckets.get(t, Bucket())) for t in range(last + 1)]
    return Stats(
        duration_s=duration_s,
        requests=sum(b.requests for b in recorder.buckets.values()),
        failures=sum(b.failures for b in recorder.buckets.values()),
        latency_ms=latency_summary(latencies),
        statuses={str(code): n for code, n in sorted(recorder.statuses.items())},
        errors=dict(recorder.errors.most_common()),
        error_samples=dict(recorder.error_samples),
        timeline=timeline,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def load_figures(stats: Stats) -> LoadFigures:
    """The contract's figures of a summary (latencies None when nothing was answered)."""
    return LoadFigures(
        requests=stats.requests,
        failures=stats.failures,
        rps=stats.rps,
        p50_ms=_finite(stats.latency_ms.p50),
        p99_ms=_finite(stats.latency_ms.p99),
        error_rate=stats.error_rate,
    )
