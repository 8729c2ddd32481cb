"""The product's story on the real node: the operator as the Pod of ``manifests/``, parameters
fetched from MinIO in the cluster, pods run by the kubelet in containerd from the images built
from the Dockerfile. Clients use the Service's ClusterIP (kube-proxy) and its DNS name (CoreDNS)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from node.helpers import wait_for

from devcluster.cluster import Cluster
from devcluster.story import (
    GROUP,
    OPERATOR_NAMESPACE,
    PLURAL,
    SAMPLE,
    VERSION,
    Load,
    Published,
    active_operator_pod,
    get_md,
    md_condition,
    model_deployment,
    predict,
    service_url,
)
from e2e.helpers import create_md, patch_md, pods, ready_pod_names, serving

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SPEC_HASH = "modeldeploy.io/spec-hash"


def exec_python(devcluster: Cluster, namespace: str, pod: str, code: str) -> str:
    """``kubectl exec POD -c server -- python -c CODE`` (through the API server and the kubelet)."""
    result = devcluster.kubectl_run("-n", namespace, "exec", pod, "-c", "server", "--", "python", "-c", code)
    return result.stdout.rstrip()


DNS_PREDICTION = """
import json, urllib.request
request = urllib.request.Request("http://iris.{ns}.svc.cluster.local/api/models/iris/prediction",
                                 data=json.dumps({sample}).encode(), headers={{"Content-Type": "application/json"}})
print(urllib.request.urlopen(request, timeout=10).read().decode())
"""

IDENTITY = """
import os
try:
    open("/written-by-the-test", "w")
    root = "writable"
except OSError as err:
    root = err.strerror
print(os.getuid(), os.getgid(), root)
"""


def test_signed_iris_from_the_bucket_is_ready_verified_and_answers_by_cluster_ip_and_dns(
        devcluster: Any, operator: str, api: client.ApiClient, keyed_namespace: str, bucket_url: str,
        published: Published) -> None:
    ns = keyed_namespace
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz"))
    md = wait_for(lambda: serving(api, ns, "iris", 2), "iris Ready with 2 verified pods", timeout=300, interval=1)

    verified = md_condition(md, "ParametersVerified")
    assert verified["reason"] == "SignatureValid" and published.fingerprint in verified["message"]
    assert md["status"]["verification"]["keyFingerprint"] == published.fingerprint

    answer = predict(service_url(api, ns, "iris"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"]["species"] == "setosa"

    pod = ready_pod_names(api, ns)[0]
    by_name = json.loads(exec_python(devcluster, ns, pod, DNS_PREDICTION.format(ns=ns, sample=SAMPLE)))
    assert by_name["prediction"]["species"] == "setosa"

    fetch_log = devcluster.kubectl_run("-n", ns, "logs", pod, "-c", "fetch").stdout
    assert f"verified, signed by {published.fingerprint} (spec.parameters.publicKey)" in fetch_log, fetch_log

    assert exec_python(devcluster, ns, pod, IDENTITY).split(" ", 2) == ["65532", "65532", "Read-only file system"]


def test_tampered_update_is_refused_while_old_pods_serve_then_a_fix_rolls_out(
        operator: str, api: client.ApiClient, keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz"))
    wait_for(lambda: serving(api, ns, "iris", 2), "iris serving", timeout=300, interval=1)
    old = ready_pod_names(api, ns)
    load = Load(service_url(api, ns, "iris")).start()
    try:
        patch_md(api, ns, "iris", {"parameters": {"source": f"{bucket_url}/tampered.tar.gz"}})

        def refused() -> dict[str, Any] | None:
            md = get_md(api, ns, "iris")
            cond = md_condition(md, "ParametersVerified")
            return md if cond.get("status") == "False" and cond.get("reason") == "FilesDiffer" else None

        md = wait_for(refused, "ParametersVerified=False (FilesDiffer)", timeout=180, interval=0.5)
        assert "model.joblib" in md_condition(md, "ParametersVerified")["message"]
        assert md_condition(md, "Available")["status"] == "True", "the old version keeps serving"
        assert md["status"]["readyReplicas"] == 2

        def retried() -> list[dict[str, Any]]:
            return [s for p in pods(api, ns) for s in p["status"].get("initContainerStatuses") or []
                    if s["restartCount"] >= 1 and (s["lastState"].get("terminated") or {}).get("exitCode")]

        wait_for(retried, "the new pod's fetch init container to be retried", timeout=120)
        assert ready_pod_names(api, ns) == old

        patch_md(api, ns, "iris", {"model": {"name": "iris", "version": "1.0.1"},
                                   "parameters": {"source": f"{bucket_url}/iris-1.0.1.tar.gz"}})
        wait_for(lambda: serving(api, ns, "iris", 2) and set(ready_pod_names(api, ns)).isdisjoint(old),
                 "the fixed version rolled out", timeout=300, interval=1)
        served = load.ok
        wait_for(lambda: load.ok > served + 20, "the load to go on against the new pods", timeout=30)
    finally:
        load.stop()
    assert load.failures == [], f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}"
    assert load.ok >= 50


def test_policies_reject_and_override_end_to_end(operator: str, api: client.ApiClient,
                                                 keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    policies = [
        {"name": "no-tiny-flowers", "when": "input.sepal_length < 1.0", "action": "reject",
         "message": "Sepal length below 1 cm is outside the training data."},
        {"name": "setosa-is-versicolor", "when": "prediction.species == 'setosa'", "action": "override",
         "value": "versicolor", "message": "overridden for the test"},
    ]
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz", replicas=1, policies=policies))
    wait_for(lambda: serving(api, ns, "iris", 1), "iris serving", timeout=300, interval=1)
    url = service_url(api, ns, "iris")
    first = ready_pod_names(api, ns)

    overridden = predict(url)
    assert overridden.status_code == 200, overridden.text
    assert overridden.json()["prediction"]["species"] == "versicolor"
    assert "setosa-is-versicolor" in str(overridden.json()["policies"])

    rejected = predict(url, body={**SAMPLE, "sepal_length": 0.5})
    assert rejected.status_code == 422
    assert "no-tiny-flowers" in rejected.text and "outside the training data" in rejected.text

    patch_md(api, ns, "iris", {"policies": [policies[0]]})
    wait_for(lambda: serving(api, ns, "iris", 1) and ready_pod_names(api, ns) != first,
             "a rollout without the override", timeout=300, interval=1)
    # The old pod drains (it still answers while terminating) until kube-proxy drops its endpoint.
    plain = wait_for(lambda: (r := predict(url)).status_code == 200 and r.json()["prediction"]["species"] == "setosa"
                     and r, "the Service to answer from the new pod only", timeout=30)
    assert "setosa-is-versicolor" not in str(plain.json().get("policies"))


def test_operator_pod_killed_mid_rollout_pod_deletion_and_md_deletion_converge(
        operator: str, api: client.ApiClient, keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz"))
    wait_for(lambda: serving(api, ns, "iris", 2), "iris serving", timeout=300, interval=1)

    def template_hash() -> str:
        return str(apps.read_namespaced_deployment("iris", ns).spec.template.metadata.annotations[SPEC_HASH])

    first = template_hash()
    patch_md(api, ns, "iris", {"model": {"name": "iris", "version": "1.0.1"},
                               "parameters": {"source": f"{bucket_url}/iris-1.0.1.tar.gz"}})
    wait_for(lambda: template_hash() != first, "the operator to start the rollout", timeout=60)
    active = wait_for(lambda: active_operator_pod(api), "the active operator pod in kopf's peering")
    core.delete_namespaced_pod(active, OPERATOR_NAMESPACE, grace_period_seconds=0)
    wait_for(lambda: serving(api, ns, "iris", 2), "the rollout to converge after the kill", timeout=300, interval=1)
    wait_for(lambda: (p := active_operator_pod(api)) and p != active, "another operator pod to take over", timeout=120)

    victim = ready_pod_names(api, ns)[0]
    core.delete_namespaced_pod(victim, ns)
    wait_for(lambda: serving(api, ns, "iris", 2) and victim not in ready_pod_names(api, ns),
             "a replacement pod Ready", timeout=300, interval=1)

    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "iris")

    def nothing_left() -> bool:
        left = (apps.list_namespaced_deployment(ns).items + apps.list_namespaced_replica_set(ns).items
                + core.list_namespaced_service(ns).items + core.list_namespaced_pod(ns).items
                + [c for c in core.list_namespaced_config_map(ns).items if c.metadata.name != "kube-root-ca.crt"])
        return not left

    wait_for(nothing_left, "every child and pod of the ModelDeployment to be gone", timeout=180, interval=0.5)
