"""Prometheus metrics of one server, in a registry of its own (so apps in tests don't collide).

Request counts and latency per model, endpoint and status (REST: the route and the HTTP
status; gRPC: `/inference.GRPCInferenceService/METHOD` and the status code's name); model load time and readiness;
whether the served files match their signature, and the rechecks' results; policy hits per
policy, source (signed or spec) and action; requests in flight; rows per predictor call.

With several worker processes (`modeldeploy serve --workers`), prometheus_client's
multiprocess mode keeps every process's values in files of `PROMETHEUS_MULTIPROC_DIR`, and
`render` reports the pod's total: counters and histograms summed; the in-flight gauge
summed over live processes; readiness and verification the minimum over live workers (the
pod is ready only if every worker is); the load time the maximum.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values

UNKNOWN_MODEL = "_unknown"  # the one `model` label of every model name this server does not serve
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir(path: Path) -> None:
    """Keep metric values in files under `path` (emptied first) from now on, so processes forked later add up.

    prometheus_client chooses its value store when it is imported, from `PROMETHEUS_MULTIPROC_DIR`;
    the server decides after parsing its flags, so this sets both. Call it before any `Metrics()`.
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a restarted container keeps its emptyDir
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (its counters stay in the totals)."""
    if MULTIPROC_ENV in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    """The server's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modeldeploy_requests",
            "HTTP requests handled, by model, endpoint and status code.",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modeldeploy_request_duration_seconds",
            "HTTP request latency, by model, endpoint and status code.",
            ["model", "endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "modeldeploy_requests_in_flight", "HTTP requests being handled now.", registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.load_seconds = Gauge(
            "modeldeploy_model_load_seconds", "Time the model took to load.", ["model"], registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "modeldeploy_model_ready", "1 when the model is ready to serve.", ["model"], registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.parameters_verified = Gauge(
            "modeldeploy_parameters_verified",
            "1 while the served parameters match their signature (verified at load, then at every recheck).",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.integrity_checks = Counter(
            "modeldeploy_integrity_checks",
            "Rechecks of the served files against the signed manifest, by result (ok or failed).",
            ["model", "result"],
            registry=self.registry,
        )
        self.policy_hits = Counter(
            "modeldeploy_policy_hits",
            "Predictions a policy acted on, by policy, its source (signed or spec) and action.",
            ["model", "policy", "source", "action"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "modeldeploy_batch_rows",
            "Rows per call of the model's predict (requests batched together), by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe_request(self, model: str, endpoint: str, status: str, seconds: float) -> None:
        key = (model, endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(*key), self.latency.labels(*key))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """The exposition text: this registry's, or every process's together in multiprocess mode."""
        path = os.environ.get(MULTIPROC_ENV)
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
