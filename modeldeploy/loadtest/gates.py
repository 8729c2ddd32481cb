"""Service-level gates a load test must pass: p99 latency, error rate, throughput.

Pure: `evaluate_gates(stats, gates)` returns the failures; the CLI turns them into exit code 1.
The judging is the contract's `evaluate_gates` (the one the operator applies to an analysis
report); this module maps the command line's gates to it and its verdicts back.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.contract import rollout
from modeldeploy.loadtest.stats import Stats, load_figures

# the contract's gate names (spec fields) -> the command line's
_GATE_NAMES = {"p99Ms": "p99_ms", "maxErrorRate": "max_error_rate", "minRps": "min_rps"}


@dataclass(frozen=True)
class Gates:
    """Limits; None means not checked."""

    p99_ms: float | None = None
    max_error_rate: float | None = None
    min_rps: float | None = None


@dataclass(frozen=True)
class GateFailure:
    """One gate the test did not pass; `actual` is None when there was nothing to judge."""

    gate: str
    limit: float
    actual: float | None

    @property
    def message(self) -> str:
        if self.actual is None:
            return f"{self.gate}: nothing measured (limit {self.limit:.4g})"
        if self.gate == "min_rps":
            return f"min_rps: {self.actual:.4g} requests/s is under the minimum of {self.limit:.4g}"
        return f"{self.gate}: {self.actual:.4g} is over the limit of {self.limit:.4g}"


def evaluate_gates(stats: Stats, gates: Gates) -> list[GateFailure]:
    """The gates `stats` fails, in the order p99, error rate, throughput.

    A test without any response has no p99, which fails a p99 gate.

    Raises:
        pydantic.ValidationError: a limit out of the contract's range (negative, an error rate over 1).
    """
    limits = rollout.Gates(p99_ms=gates.p99_ms, max_error_rate=gates.max_error_rate, min_rps=gates.min_rps)
    results = rollout.evaluate_gates(rollout.AnalysisReport(canary=load_figures(stats)), limits)
    return [GateFailure(_GATE_NAMES[r.gate], r.limit, r.actual) for r in results if not r.passed]
