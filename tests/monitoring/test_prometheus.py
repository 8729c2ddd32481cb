"""A real Prometheus scrapes a real model server and a real operator; every dashboard query answers.

The server is `modeldeploy serve` of a signed iris on 127.0.0.1 (with a guardrail and integrity
rechecks), put under a bounded load. The operator runs as `modeldeploy operator` against a
control plane of its own on loopback (`devcluster.cluster.Cluster(tmp).up()`: no node, pods stay
Pending), where a ModelDeployment is admitted (its signature cannot be fetched: a warning) and a
deleted child is put back. Prometheus scrapes both every second, as Kubernetes service discovery
would label them (namespace, pod).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client
from prometheus_support import Prometheus, dashboard_queries, rules_document, static_job

from devcluster.cluster import Cluster
from devcluster.iris import sealed
from devcluster.localrun import OPERATOR_NAMESPACE, OperatorProcess, install
from modeldeploy.contract.api import GROUP, PLURAL, VERSION

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model_server"))
from server_support import SETOSA, VIRGINICA, ServerProcess, write_trust

NAMESPACE = "obs"  # the label a pod's scrape would carry
GUARDRAIL = {"name": "no-giant-sepals", "when": "input.sepal_length > 7.0", "action": "reject",
             "message": "sepal_length over 7 cm is outside the training range"}
VARIABLES = {"namespace": NAMESPACE, "model": "iris", "__rate_interval": "20s", "datasource": "prometheus"}

PREDICTIONS = 'sum(modeldeploy_requests_total{endpoint="/api/models/{name}/prediction"})'

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def server_queries() -> list[tuple[str, str]]:
    return [(title, expr) for title, expr in dashboard_queries(VARIABLES) if "modeldeploy_operator_" not in expr]


def operator_queries() -> list[tuple[str, str]]:
    return [(title, expr) for title, expr in dashboard_queries(VARIABLES) if "modeldeploy_operator_" in expr]


def load(url: str, valid: int = 200, invalid: int = 20, rejected: int = 20, seconds: float = 20.0) -> dict[int, int]:
    """A bounded load (in count and time): valid, malformed and guardrail-rejected predictions; answers by status."""
    codes: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    bodies: list[Any] = [SETOSA] * valid + [{"sepal_length": "long"}] * invalid + [VIRGINICA] * rejected
    with httpx.Client(base_url=url, timeout=5) as http:
        for body in bodies:
            if time.monotonic() > deadline:
                break
            status = http.post("/api/models/iris/prediction", json=body).status_code
            codes[status] = codes.get(status, 0) + 1
    return codes


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Prometheus, dict[int, int]]]:
    """The iris server under load, and a Prometheus that has scraped it after the load."""
    work = tmp_path_factory.mktemp("monitoring-server")
    model_dir, keys = sealed(work)
    server = ServerProcess(model_dir, {"policies": [GUARDRAIL], "recheckSeconds": 1}, work,
                           write_trust(work / "trust.json", keys.public))
    prometheus = None
    try:
        server.wait_listening()
        server.wait_started()
        prometheus = Prometheus(work / "prometheus", [
            static_job("model", f"127.0.0.1:{server.port}", namespace=NAMESPACE, pod="iris-0")])
        prometheus.wait_for('up{job="model"} == 1')
        # One of each answer first, scraped before the load: a counter's series is born with its first
        # request, and a series first scraped after the whole load would show no rate() at all.
        first = load(server.url, valid=1, invalid=1, rejected=1)
        prometheus.wait_for(f"{PREDICTIONS} >= 3")
        codes = {status: first.get(status, 0) + count for status, count in load(server.url).items()}
        prometheus.wait_for(f"{PREDICTIONS} >= {sum(codes.values())}")
        time.sleep(2)  # two more scrapes: every rate() window holds the load's last samples twice
        yield server, prometheus, codes
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()


def test_prometheus_scrapes_the_model_servers_requests_policies_and_integrity(
    served: tuple[ServerProcess, Prometheus, dict[int, int]],
) -> None:
    _, prometheus, codes = served
    assert codes == {200: 201, 400: 21, 422: 21}  # answered, malformed, refused by the guardrail
    by_status = {s["metric"]["status"]: float(s["value"][1]) for s in prometheus.query(
        'sum by (status) (modeldeploy_requests_total{endpoint="/api/models/{name}/prediction"})')}
    assert by_status == {str(code): float(count) for code, count in codes.items()}
    hits = prometheus.query('modeldeploy_policy_hits_total{policy="no-giant-sepals", action="reject"}')
    assert [float(s["value"][1]) for s in hits] == [float(codes[422])] and hits[0]["metric"]["source"] == "spec"
    assert prometheus.query('modeldeploy_parameters_verified{model="iris"}')[0]["value"][1] == "1"
    assert float(prometheus.query('modeldeploy_integrity_checks_total{result="ok"}')[0]["value"][1]) >= 1
    assert prometheus.query('modeldeploy_model_ready{namespace="obs", pod="iris-0"}')[0]["value"][1] == "1"


def test_the_recording_rules_read_the_servers_error_and_slow_ratios(
    served: tuple[ServerProcess, Prometheus, dict[int, int]],
) -> None:
    _, prometheus, _ = served

    records = {rule["record"]: rule["expr"] for group in rules_document()["groups"] for rule in group["rules"]
               if "record" in rule and rule["record"].endswith("rate5m")}
    for name, expr in records.items():
        result = prometheus.query(expr)
        assert [s["metric"] for s in result] == [{"namespace": NAMESPACE, "model": "iris"}], name
        assert float(result[0]["value"][1]) == 0.0, f"{name}: no 5xx and no slow iris prediction on this machine"


@pytest.mark.parametrize(("title", "expr"), server_queries(), ids=[t for t, _ in server_queries()])
def test_every_model_panel_query_parses_and_answers(
    served: tuple[ServerProcess, Prometheus, dict[int, int]], title: str, expr: str,
) -> None:
    _, prometheus, _ = served
    assert prometheus.query(expr), f"{title}: {expr} returned nothing"


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The operator against its own loopback control plane, after an admission, a reconcile and a drift repair."""
    work = tmp_path_factory.mktemp("monitoring-operator")
    cluster = Cluster(work / "cluster").up(owner="monitoring-test")
    runner, prometheus = None, None
    try:
        install(cluster)
        runner = OperatorProcess(cluster.admin_kubeconfig, work / "operator.log", "modeldeploy-server:test")
        runner.start()
        assert runner.metrics_url is not None
        prometheus = Prometheus(work / "prometheus", [static_job(
            "operator", runner.metrics_url.removeprefix("http://").removesuffix("/metrics"),
            namespace=OPERATOR_NAMESPACE, pod="operator-0")])
        with cluster.api_client() as api:
            _admit_reconcile_and_repair(api)
        prometheus.wait_for('sum(modeldeploy_operator_drift_repairs_total{kind="ConfigMap", cause="deleted"}) >= 1')
        prometheus.wait_for('sum(modeldeploy_operator_signature_verifications_total) >= 1')
        time.sleep(2)
        yield prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        if runner is not None:
            runner.stop()
        cluster.down()


def _admit_reconcile_and_repair(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "iris-key"}, "stringData": {"public.pem": key}})
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": "iris"},
        "spec": {"model": {"name": "iris", "version": "1.0.0"},
                 "parameters": {"source": "s3://models/iris/1.0.0/", "publicKey": {"secretName": "iris-key"}}},
    })
    deadline = time.monotonic() + 60
    while not core.list_namespaced_config_map(NAMESPACE, label_selector="app.kubernetes.io/instance=iris").items:
        assert time.monotonic() < deadline, "the operator made no ConfigMap for iris"
        time.sleep(0.5)
    core.delete_namespaced_config_map("iris-config", NAMESPACE)


def test_prometheus_scrapes_the_operators_reconciles_admissions_and_drift_repairs(operated: Prometheus) -> None:
    reconciles = {s["metric"]["result"] for s in operated.query(
        'sum by (result) (modeldeploy_operator_reconciles_total{namespace="modeldeploy-system"})')}
    assert "applied" in reconciles
    outcomes = {(s["metric"]["webhook"], s["metric"]["outcome"]) for s in operated.query(
        "modeldeploy_operator_admission_reviews_total")}
    assert {("pin-modeldeployment", "allowed"), ("validate-modeldeployment", "allowed")} <= outcomes
    # the bucket does not exist: the spec's own key (its Secret is there) decides, so admission warns and the
    # pods will verify
    reasons = {(s["metric"]["reason"], s["metric"]["outcome"]) for s in operated.query(
        "modeldeploy_operator_signature_verifications_total")}
    assert len(reasons) == 1 and next(iter(reasons))[1] == "warned", reasons
    applied = {s["metric"]["kind"] for s in operated.query("modeldeploy_operator_children_applied_total")}
    assert {"ConfigMap", "Service", "Deployment"} <= applied


@pytest.mark.parametrize(("title", "expr"), operator_queries(), ids=[t for t, _ in operator_queries()])
def test_every_operator_panel_query_parses_and_answers(operated: Prometheus, title: str, expr: str) -> None:
    assert operated.query(expr), f"{title}: {expr} returned nothing"
