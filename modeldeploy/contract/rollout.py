"""Progressive rollouts as typed data: the spec's canary steps and gates, the analysis Job's report, the status.

The operator renders an analysis Job that runs the server image's `modeldeploy loadtest` against
the canary's pods and, with the same inputs, the stable pods; the Job writes an `AnalysisReport`
(one line of JSON) as its termination message, which the operator reads from the Job's pod and
judges with `evaluate_gates`. The same gates and the same report serve `spec.loadTest`, which
measures the stable revision after every completed rollout. Pure: no Kubernetes or HTTP here.
"""

from __future__ import annotations

import json
import math
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ROLLOUT_HEALTHY: Final = "RolloutHealthy"
PHASES: Final = ("Progressing", "Analyzing", "Promoted", "RolledBack")
Phase = Literal["Progressing", "Analyzing", "Promoted", "RolledBack"]
REPORT_LIMIT: Final = 4096  # bytes the kubelet keeps of a termination message
DEFAULT_USERS: Final = 4
LOAD_TEST_HISTORY: Final = 10  # status.loadTest keeps this many revisions


class RolloutModel(BaseModel):
    """Frozen, unknown keys refused, populated by the camelCase names users write."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Gates(RolloutModel):
    """Limits an analysis must meet; a gate left out is not checked (p99 and errors default to the seed's)."""

    p99_ms: float | None = Field(default=100.0, alias="p99Ms", ge=0,
                                 description="Highest p99 latency of the canary, in milliseconds. Default 100.")
    max_error_rate: float | None = Field(default=0.0, alias="maxErrorRate", ge=0, le=1,
                                         description="Highest fraction of failed canary requests. Default 0 "
                                         "(no errors); a policy rejection counts as an error.")
    min_rps: float | None = Field(default=None, alias="minRps", ge=0,
                                  description="Lowest canary throughput, requests per second.")
    max_policy_reject_rate: float | None = Field(
        default=None, alias="maxPolicyRejectRate", ge=0, le=1,
        description="Highest fraction of the compared inputs a canary policy rejects.")
    max_policy_override_rate: float | None = Field(
        default=None, alias="maxPolicyOverrideRate", ge=0, le=1,
        description="Highest fraction of the compared inputs whose canary prediction a policy overrode or clamped.")
    max_prediction_change_rate: float | None = Field(
        default=None, alias="maxPredictionChangeRate", ge=0, le=1,
        description="Prediction-change budget: highest fraction of identical inputs for which the canary and "
        "the stable pods answer differently (a rejection on one side only counts as a change).")
    prediction_tolerance: float = Field(
        default=1e-6, alias="predictionTolerance", ge=0,
        description="Numbers in two answers are the same when they differ by at most this, absolutely or "
        "relatively.")


class InputsRef(RolloutModel):
    """A ConfigMap key holding real request bodies, one JSON object per line (JSONL)."""

    config_map_name: str = Field(alias="configMapName", min_length=1,
                                 description="Name of a ConfigMap in the ModelDeployment's namespace.")
    key: str = Field(default="inputs.jsonl", min_length=1, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="Key within the ConfigMap.")


class Analysis(RolloutModel):
    """A load test run in the cluster as a Job with the server image's `modeldeploy loadtest`."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.users) || !has(self.rate)", "message": "give users or rate, not both"},
    ]})

    duration_seconds: int = Field(default=30, alias="durationSeconds", ge=5, le=3600,
                                  description="How long the load runs. Default 30.")
    users: int | None = Field(default=None, ge=1, le=512,
                              description="Closed model: connections each sending a request when the last one "
                              f"is answered. Default {DEFAULT_USERS} without rate.")
    rate: float | None = Field(default=None, ge=0.01, le=100000, description="Open model: requests per second.")
    samples: int = Field(default=200, ge=1, le=10000,
                         description="Distinct inputs generated from the model's input schema (without inputs), "
                         "and how many are sent once to both revisions to compare their answers.")
    inputs: InputsRef | None = Field(default=None, description="Real inputs instead of generated ones.")
    gates: Gates = Field(default_factory=Gates)

    @model_validator(mode="after")
    def _one_load_model(self) -> Analysis:
        if self.users is not None and self.rate is not None:
            raise ValueError("give users or rate, not both")
        return self


class CanaryStep(RolloutModel):
    """One step: run the new revision on this many canary replicas, then analyse it."""

    replicas: int = Field(default=1, ge=1, le=1000,
                          description="Canary replicas in this step (the canary's share of the Service's pods).")
    analysis: Analysis = Field(default_factory=Analysis)


class RolloutSpec(RolloutModel):
    """How a new revision (anything the pods run with) replaces the stable one."""

    strategy: Literal["RollingUpdate", "Canary"] = Field(
        default="RollingUpdate",
        description="RollingUpdate: replace the pods one at a time (maxUnavailable 0). Canary: run the new "
        "revision in a second, revision-labelled Deployment behind the same Service, analyse each step with a "
        "load test, then promote it or roll it back by itself.")
    steps: tuple[CanaryStep, ...] = Field(
        default=(), max_length=10,
        description="Canary steps, in order. Default one step of one replica with the default analysis.")
    progress_deadline_seconds: int = Field(
        default=600, alias="progressDeadlineSeconds", ge=30, le=86400,
        description="How long a step may take (canary pods ready, analysis done) before it is rolled back.")

    def canary_steps(self) -> tuple[CanaryStep, ...]:
        """The steps a canary goes through (the documented default when none are given)."""
        return self.steps or (CanaryStep(),)


class LoadFigures(RolloutModel):
    """What a load on one revision measured."""

    requests: int = Field(ge=0, description="Requests sent.")
    failures: int = Field(ge=0, description="Requests that failed (HTTP 4xx/5xx or no answer).")
    rps: float = Field(description="Requests per second.")
    p50_ms: float | None = Field(default=None, alias="p50Ms", description="Median latency, ms.")
    p99_ms: float | None = Field(default=None, alias="p99Ms", description="99th percentile latency, ms.")
    error_rate: float = Field(alias="errorRate", description="Failed fraction of the requests.")


class Comparison(RolloutModel):
    """The answers of both revisions to the same inputs, each sent once to each."""

    compared: int = Field(ge=0, description="Inputs sent to both revisions.")
    changed: int = Field(ge=0, description="Inputs the two revisions answered differently.")
    rejected: int = Field(ge=0, description="Inputs a canary policy rejected.")
    overridden: int = Field(ge=0, description="Inputs whose canary prediction a policy overrode or clamped.")


class AnalysisReport(RolloutModel):
    """The analysis Job's result: its termination message (one line of JSON, under 4 KiB)."""

    canary: LoadFigures | None = None  # the revision under test (the only one for spec.loadTest)
    baseline: LoadFigures | None = None  # the stable pods, under the same load at the same time
    comparison: Comparison | None = None
    error: str | None = Field(default=None, max_length=1000, description="Why nothing could be measured.")

    def line(self) -> str:
        """The report as written: ASCII JSON on one line."""
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), ensure_ascii=True,
                          separators=(",", ":"), allow_nan=False)

    @classmethod
    def parse(cls, text: str | None) -> AnalysisReport | None:
        """The report in a termination message (its last line that is one), or None."""
        for line in reversed((text or "").strip().splitlines()):
            try:
                return cls.model_validate_json(line)
            except ValidationError:
                continue
        return None


class GateResult(RolloutModel):
    """One gate's verdict, with the figure it judged."""

    gate: str = Field(description="The gate's field name in spec, e.g. maxErrorRate.")
    limit: float = Field(description="The gate's limit, as the spec sets it.")
    actual: float | None = Field(default=None, description="The measured figure (absent: nothing measured).")
    passed: bool = Field(description="Whether the figure met the limit.")


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def report_rates(report: AnalysisReport) -> dict[str, float | None]:
    """The comparison's rates (None without a comparison or with nothing compared)."""
    comparison = report.comparison
    total = comparison.compared if comparison else 0
    return {
        "predictionChangeRate": _rate(comparison.changed, total) if comparison else None,
        "policyRejectRate": _rate(comparison.rejected, total) if comparison else None,
        "policyOverrideRate": _rate(comparison.overridden, total) if comparison else None,
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def evaluate_gates(report: AnalysisReport, gates: Gates) -> list[GateResult]:
    """Every gate set in `gates`, judged on `report`; a gate without a figure to judge fails."""
    canary = report.canary
    rates = report_rates(report)
    checks: list[tuple[str, float | None, float | None, bool]] = [
        ("p99Ms", gates.p99_ms, _finite(canary.p99_ms) if canary else None, False),
        ("maxErrorRate", gates.max_error_rate, canary.error_rate if canary else None, False),
        ("minRps", gates.min_rps, canary.rps if canary else None, True),
        ("maxPolicyRejectRate", gates.max_policy_reject_rate, rates["policyRejectRate"], False),
        ("maxPolicyOverrideRate", gates.max_policy_override_rate, rates["policyOverrideRate"], False),
        ("maxPredictionChangeRate", gates.max_prediction_change_rate, rates["predictionChangeRate"], False),
    ]
    results = []
    for gate, limit, actual, is_minimum in checks:
        if limit is None:
            continue
        passed = actual is not None and (actual >= limit if is_minimum else actual <= limit)
        results.append(GateResult(gate=gate, limit=limit, actual=actual, passed=passed))
    return results


def gate_message(result: GateResult) -> str:
    """One line: which gate failed with what figure."""
    if result.actual is None:
        return f"{result.gate}: nothing measured (limit {result.limit:g})"
    relation = "under the minimum" if result.gate == "minRps" else "over the limit"
    return f"{result.gate}: {result.actual:.4g} is {relation} of {result.limit:g}"


class AnalysisResult(RolloutModel):
    """One finished analysis (a canary step's, or a spec.loadTest run's)."""

    revision: str = Field(description="The revision measured.")
    version: str | None = Field(default=None, description="spec.model.version of that revision.")
    step: int | None = Field(default=None, ge=1, description="The canary step (1-based); absent for loadTest.")
    job: str = Field(description="The analysis Job (kubectl logs job/NAME).")
    finished_at: str = Field(alias="finishedAt", json_schema_extra={"format": "date-time"},
                             description="When the operator judged it.")
    passed: bool = Field(description="Whether every gate passed.")
    canary: LoadFigures | None = Field(default=None, description="The revision under test.")
    baseline: LoadFigures | None = Field(default=None, description="The stable pods under the same load.")
    prediction_change_rate: float | None = Field(default=None, alias="predictionChangeRate",
                                                 description="Fraction of the compared inputs answered differently.")
    policy_reject_rate: float | None = Field(default=None, alias="policyRejectRate",
                                             description="Fraction of the compared inputs a canary policy rejected.")
    policy_override_rate: float | None = Field(default=None, alias="policyOverrideRate",
                                               description="Fraction of the compared inputs a canary policy "
                                               "overrode or clamped.")
    compared: int | None = Field(default=None, description="Inputs sent to both revisions.")
    gates: list[GateResult] = Field(default_factory=list, description="Every gate set, with its verdict.")
    message: str = Field(default="", description="The verdict in one line.")


def judge(report: AnalysisReport | None, gates: Gates, *, revision: str, version: str | None, step: int | None,
          job: str, finished_at: str, job_failed: str | None = None) -> AnalysisResult:
    """The verdict on one analysis Job: its report judged by `gates` (no report, or an error, fails)."""
    report = report or AnalysisReport(error=job_failed or "the analysis Job ended without a report")
    results = [] if report.error else evaluate_gates(report, gates)
    failed = [result for result in results if not result.passed]
    if report.error:
        message = f"analysis failed: {report.error}"
    elif failed:
        message = "; ".join(gate_message(result) for result in failed)
    else:
        message = "all gates passed: " + ", ".join(f"{r.gate} {r.actual:.4g}" for r in results if r.actual is not None)
    comparison = report.comparison
    return AnalysisResult(
        revision=revision, version=version, step=step, job=job, finished_at=finished_at,
        passed=not report.error and not failed, canary=report.canary, baseline=report.baseline,
        **{"compared": comparison.compared if comparison else None}, **report_rates(report),
        gates=results, message=message,
    )


class RolloutStatus(RolloutModel):
    """Where the rollout of the spec's revision stands."""

    strategy: Literal["RollingUpdate", "Canary"] = Field(description="spec.rollout.strategy.")
    phase: Phase = Field(description="Progressing, Analyzing, Promoted or RolledBack.")
    reason: str = Field(description="Why, as the RolloutHealthy condition says: Promoted, CanaryProgressing, "
                        "RolloutProgressing, RolledBack, CanaryNotReady, AnalysisFailed or a verification reason.")
    stable_revision: str | None = Field(default=None, alias="stableRevision",
                                        description="The revision the stable Deployment runs.")
    canary_revision: str | None = Field(default=None, alias="canaryRevision",
                                        description="The revision under canary (or rolled back).")
    step: int | None = Field(default=None, ge=1, description="The current canary step (1-based).")
    steps: int | None = Field(default=None, ge=1, description="How many steps the canary has.")
    step_started_at: str | None = Field(default=None, alias="stepStartedAt",
                                        json_schema_extra={"format": "date-time"},
                                        description="When the current step began (its deadline counts from here).")
    analysis_job: str | None = Field(default=None, alias="analysisJob", description="The running analysis Job.")
    message: str = Field(default="", description="What the rollout is doing, in one line.")
    last_analysis: AnalysisResult | None = Field(default=None, alias="lastAnalysis",
                                                 description="The last finished analysis of the canary revision.")

    @property
    def active(self) -> bool:
        """Whether the rollout still has work to do (a canary, an analysis, a promotion)."""
        return self.phase in ("Progressing", "Analyzing")
