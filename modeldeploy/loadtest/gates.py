"""Service-level gates a load test must pass: p99 latency, error rate, throughput.

Pure: `evaluate_gates(stats, gates)` returns the failures; the CLI turns them into exit code 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modeldeploy.loadtest.stats import Stats


@dataclass(frozen=True)
class Gates:
    """Limits; None means not checked."""

    p99_ms: float | None = None
    max_error_rate: float | None = None
    min_rps: float | None = None


@dataclass(frozen=True)
class GateFailure:
    """One gate the test did not pass."""

    gate: str
    limit: float
    actual: float

    @property
    def message(self) -> str:
        if self.gate == "min_rps":
            return f"min_rps: {self.actual:.4g} requests/s is under the minimum of {self.limit:.4g}"
        return f"{self.gate}: {self.actual:.4g} is over the limit of {self.limit:.4g}"


def evaluate_gates(stats: Stats, gates: Gates) -> list[GateFailure]:
    """The gates `stats` fails, in the order p99, error rate, throughput.

    A test without any response has an undefined p99, which fails a p99 gate.
    """
    failures = []
    p99 = stats.latency_ms.p99
    if gates.p99_ms is not None and (math.isnan(p99) or p99 > gates.p99_ms):
        failures.append(GateFailure("p99_ms", gates.p99_ms, p99))
    if gates.max_error_rate is not None and stats.error_rate > gates.max_error_rate:
        failures.append(GateFailure("max_error_rate", gates.max_error_rate, stats.error_rate))
    if gates.min_rps is not None and stats.rps < gates.min_rps:
        failures.append(GateFailure("min_rps", gates.min_rps, stats.rps))
    return failures
