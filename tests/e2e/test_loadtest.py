"""`modeldeploy loadtest md/iris`: load through the Kubernetes API to pods the operator runs.

The operator as a pod, the real control plane and the real node; the load goes to the ready
pod IPs of the Service's EndpointSlices (on the node's bridge), spread over both replicas.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster.story import GROUP, PLURAL, VERSION, model_deployment
from modeldeploy.cli import main
from modeldeploy.loadtest.target import TargetError, resolve_target

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


def loadtest_md_iris(namespace: str, kubeconfig: str, *options: str) -> Any:
    """`modeldeploy loadtest md/iris -n NAMESPACE` with OPTIONS, run in-process."""
    return CliRunner().invoke(main, ["loadtest", "md/iris", "-n", namespace, "--kubeconfig", kubeconfig, *options],
                              catch_exceptions=False)


def predictions_served(url: str) -> float:
    """The pod's count of 200 answers to predictions, from its /metrics."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
    return sum(
        sample.value
        for family in families
        if family.name == "modeldeploy_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("status") == "200"
        and sample.labels.get("endpoint", "").endswith("/prediction")
    )


def test_loadtest_md_spreads_load_over_the_ready_pods_and_gates_it(
    operator: str,
    api: client.ApiClient,
    keyed_namespace: str,
    bucket_url: str,
    devcluster: Any,
    tmp_path: Path,
) -> None:
    ns = keyed_namespace
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz", replicas=2)
    )
    kubeconfig = str(devcluster.admin_kubeconfig)
    deadline = time.monotonic() + 240
    while True:
        try:
            endpoints = resolve_target("md/iris", ns, kubeconfig).endpoints
            if len(endpoints) == 2:
                break
        except TargetError:
            pass
        assert time.monotonic() < deadline, "iris did not get 2 ready pods"
        time.sleep(1)
    urls = [e.url for e in endpoints]
    before = {url: predictions_served(url) for url in urls}

    result = loadtest_md_iris(ns, kubeconfig, "--users", "4", "--duration", "3s", "--p99-ms", "5000",
                              "--max-error-rate", "0", "--report", str(tmp_path))
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(report["meta"]["endpoints"]) == sorted(urls)
    assert report["stats"]["failures"] == 0 and report["stats"]["requests"] > 20
    served = {url: predictions_served(url) - before[url] for url in urls}
    assert all(n > 0 for n in served.values()), f"both replicas took load: {served}"
    assert sum(served.values()) >= report["stats"]["requests"]

    failing = loadtest_md_iris(ns, kubeconfig, "--users", "2", "--duration", "1s", "--p99-ms", "0.001")
    assert failing.exit_code == 1 and "FAIL p99_ms" in failing.output
