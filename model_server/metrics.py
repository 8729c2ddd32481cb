"""Prometheus metrics of one server, in a registry of its own (so apps in tests don't collide).

Request counts and latency per model, endpoint and status (REST: the route and the HTTP
status; gRPC: `/inference.GRPCInferenceService/METHOD` and the status code's name); model load time and readiness;
whether the served files match their signature, and the rechecks' results; policy hits per
policy, source (signed or spec) and action; requests in flight.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

UNKNOWN_MODEL = "_unknown"  # the one `model` label of every model name this server does not serve
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
            "modeldeploy_requests_in_flight", "HTTP requests being handled now.", registry=self.registry
        )
        self.load_seconds = Gauge(
            "modeldeploy_model_load_seconds", "Time the model took to load.", ["model"], registry=self.registry
        )
        self.model_ready = Gauge(
            "modeldeploy_model_ready", "1 when the model is ready to serve.", ["model"], registry=self.registry
        )
        self.parameters_verified = Gauge(
            "modeldeploy_parameters_verified",
            "1 while the served parameters match their signature (verified at load, then at every recheck).",
            ["model"],
            registry=self.registry,
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
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe_request(self, model: str, endpoint: str, status: str, seconds: float) -> None:
        key = (model, endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(*key), self.latency.labels(*key))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
