"""Prometheus discovers the model pods through the Kubernetes API and scrapes their /metrics.

An upstream Prometheus (`scripts/build-prometheus.sh`; Debian's has no Kubernetes discovery) on
the host (127.0.0.1) uses `kubernetes_sd_configs` (role: pod) with the admin kubeconfig of the
cluster, keeps the pods of this test's namespace and their `http` container port (the server
answers /metrics there), and labels them as a cluster's Prometheus would (namespace, pod). The
pod IPs are on the node's bridge, which the host routes to.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devcluster.story import GROUP, PLURAL, VERSION, model_deployment, predict, ready_endpoints
from modeldeploy.contract.pod import PORT_NAME

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))
from prometheus_support import UPSTREAM, Prometheus

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


def pod_scrape_job(namespace: str, kubeconfig: Path) -> dict[str, Any]:
    """Kubernetes pod discovery of `namespace`, keeping each pod's `http` port, labelled namespace/pod/model."""
    return {
        "job_name": "model-pods",
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig),
                                   "namespaces": {"names": [namespace]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": PORT_NAME, "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }


def test_prometheus_discovers_and_scrapes_a_served_model_pod(
    operator: str, api: client.ApiClient, keyed_namespace: str, bucket_url: str, devcluster: Any, tmp_path: Path,
) -> None:
    ns = keyed_namespace
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz", replicas=1))
    deadline = time.monotonic() + 240
    while not (endpoints := ready_endpoints(api, ns, "iris")):
        assert time.monotonic() < deadline, "iris got no ready pod"
        time.sleep(1)
    assert predict(endpoints[0]).status_code == 200
    pod = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="app.kubernetes.io/instance=iris").items[0]

    assert UPSTREAM.exists(), "Kubernetes discovery needs upstream Prometheus: run scripts/build-prometheus.sh"
    prometheus = Prometheus(tmp_path / "prometheus", [pod_scrape_job(ns, devcluster.admin_kubeconfig)], str(UPSTREAM))
    try:
        up = prometheus.wait_for(f'up{{job="model-pods", namespace="{ns}"}} == 1', timeout=60)
        assert [s["metric"]["pod"] for s in up] == [pod.metadata.name]
        ready = prometheus.wait_for(f'modeldeploy_model_ready{{namespace="{ns}", model="iris"}}')
        assert [s["value"][1] for s in ready] == ["1"]
        verified = prometheus.query(f'modeldeploy_parameters_verified{{namespace="{ns}", pod="{pod.metadata.name}"}}')
        assert [s["value"][1] for s in verified] == ["1"]
        served = prometheus.wait_for(
            f'modeldeploy_requests_total{{namespace="{ns}", endpoint="/api/models/{{name}}/prediction", status="200"}}')
        assert float(served[0]["value"][1]) >= 1
    finally:
        prometheus.stop()
