"""The issue's four end-to-end scenarios: the real operator process (under its ServiceAccount),
the real control plane, and pods that really run on the process node.

Predictions go to pod IPs taken from the Service's EndpointSlices (no kube-proxy here).
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import pytest
from kubernetes import client

from model_operator.localrun import OperatorProcess
from modeldeploy.story import GROUP, PLURAL, SAMPLE, VERSION, Load, Published, get_md, md_condition, \
    model_deployment, predict, ready_endpoints
from node.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

SPEC_HASH = "modeldeploy.io/spec-hash"


def create_md(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def patch_md(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}, _content_type="application/merge-patch+json")


def pods(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CoreV1Api(api).list_namespaced_pod(namespace)
    return [api.sanitize_for_serialization(p) for p in listed.items]


def ready_pod_ips(api: client.ApiClient, namespace: str) -> list[str]:
    return sorted(p["status"]["podIP"] for p in pods(api, namespace)
                  if not p["metadata"].get("deletionTimestamp")
                  and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []))


def serving(api: client.ApiClient, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
    """The ModelDeployment once it is Ready, verified and its rollout is complete with ``replicas`` pods."""
    md = get_md(api, namespace, name)
    status = md.get("status") or {}
    complete = (md_condition(md, "Ready").get("status") == "True"
                and md_condition(md, "ParametersVerified").get("status") == "True"
                and status.get("observedGeneration") == md["metadata"]["generation"]
                and status.get("readyReplicas") == replicas)
    dep = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    rolled = (dep.status.updated_replicas == replicas and dep.status.ready_replicas == replicas
              and (dep.status.replicas or 0) == replicas)
    endpoints = ready_endpoints(api, namespace, name)
    return md if complete and rolled and len(endpoints) == replicas else None


def test_signed_iris_becomes_ready_verified_and_answers(operator: OperatorProcess, api: client.ApiClient,
                                                        keyed_namespace: str, bucket_url: str,
                                                        published: Published) -> None:
    ns = keyed_namespace
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz"))
    md = wait_for(lambda: serving(api, ns, "iris", 2), "iris Ready with 2 verified pods", timeout=240, interval=1)

    verified = md_condition(md, "ParametersVerified")
    assert verified["reason"] == "SignatureValid" and published.fingerprint in verified["message"]
    assert md["status"]["verification"]["keyFingerprint"] == published.fingerprint
    ips = ready_pod_ips(api, ns)
    assert len(ips) == 2
    assert ready_endpoints(api, ns, "iris") == sorted(f"http://{ip}:8000" for ip in ips)
    for ip in ips:
        answer = predict(f"http://{ip}:8000")
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"]["species"] == "setosa"


def test_tampered_update_is_refused_while_old_pods_serve_then_a_fix_rolls_out(
        operator: OperatorProcess, api: client.ApiClient, keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz"))
    wait_for(lambda: serving(api, ns, "iris", 2), "iris serving", timeout=240, interval=1)
    old_ips = ready_pod_ips(api, ns)
    load = Load(api, ns, "iris").start()
    try:
        patch_md(api, ns, "iris", {"parameters": {"source": f"{bucket_url}/tampered.tar.gz"}})

        def refused() -> dict[str, Any] | None:
            md = get_md(api, ns, "iris")
            cond = md_condition(md, "ParametersVerified")
            return md if cond.get("status") == "False" and cond.get("reason") == "FilesDiffer" else None

        md = wait_for(refused, "ParametersVerified=False (FilesDiffer)", timeout=120, interval=0.5)
        assert "model.joblib" in md_condition(md, "ParametersVerified")["message"]
        assert md_condition(md, "Available")["status"] == "True", "the old version keeps serving"
        assert md["status"]["readyReplicas"] == 2

        def crash_looping() -> list[dict[str, Any]]:
            return [s for p in pods(api, ns) for s in p["status"].get("initContainerStatuses") or []
                    if s["restartCount"] >= 1 and (s["lastState"].get("terminated") or {}).get("exitCode")]

        wait_for(crash_looping, "the new pod's fetch init container to be retried", timeout=90)
        assert ready_pod_ips(api, ns) == old_ips

        patch_md(api, ns, "iris", {"model": {"name": "iris", "version": "1.0.1"},
                                   "parameters": {"source": f"{bucket_url}/iris-1.0.1.tar.gz"}})
        wait_for(lambda: serving(api, ns, "iris", 2) and set(ready_pod_ips(api, ns)).isdisjoint(old_ips)
                 and len(ready_pod_ips(api, ns)) == 2, "the fixed version rolled out", timeout=240, interval=1)
        wait_for(lambda: load.ok and any(url.split("//")[1].split(":")[0] not in old_ips for url in load.served_by),
                 "the load to reach the new pods", timeout=30)
    finally:
        load.stop()
    assert load.failures == [], f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}"
    assert load.ok >= 50


def test_policies_reject_and_override_end_to_end(operator: OperatorProcess, api: client.ApiClient,
                                                 keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    policies = [
        {"name": "no-tiny-flowers", "when": "input.sepal_length < 1.0", "action": "reject",
         "message": "Sepal length below 1 cm is outside the training data."},
        {"name": "setosa-is-versicolor", "when": "prediction.species == 'setosa'", "action": "override",
         "value": "versicolor", "message": "overridden for the test"},
    ]
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz", replicas=1, policies=policies))
    wait_for(lambda: serving(api, ns, "iris", 1), "iris serving", timeout=240, interval=1)
    url = ready_endpoints(api, ns, "iris")[0]

    overridden = predict(url)
    assert overridden.status_code == 200, overridden.text
    assert overridden.json()["prediction"]["species"] == "versicolor"
    assert "setosa-is-versicolor" in str(overridden.json()["policies"])

    rejected = predict(url, body={**SAMPLE, "sepal_length": 0.5})
    assert rejected.status_code == 422
    assert "no-tiny-flowers" in rejected.text and "outside the training data" in rejected.text

    patch_md(api, ns, "iris", {"policies": [policies[0]]})
    wait_for(lambda: serving(api, ns, "iris", 1) and ready_endpoints(api, ns, "iris") != [url],
             "a rollout without the override", timeout=240, interval=1)
    plain = predict(ready_endpoints(api, ns, "iris")[0])
    assert plain.status_code == 200 and plain.json()["prediction"]["species"] == "setosa"


def test_operator_restart_pod_deletion_and_md_deletion_converge(
        operator: OperatorProcess, api: client.ApiClient, keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    create_md(api, ns, model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz"))
    wait_for(lambda: serving(api, ns, "iris", 2), "iris serving", timeout=240, interval=1)

    def template_hash() -> str:
        return str(apps.read_namespaced_deployment("iris", ns).spec.template.metadata.annotations[SPEC_HASH])

    first = template_hash()
    patch_md(api, ns, "iris", {"model": {"name": "iris", "version": "1.0.1"},
                               "parameters": {"source": f"{bucket_url}/iris-1.0.1.tar.gz"}})
    wait_for(lambda: template_hash() != first, "the operator to start the rollout", timeout=60)
    assert operator.process is not None
    operator.process.send_signal(signal.SIGKILL)
    operator.process.wait(timeout=10)
    operator.start()
    wait_for(lambda: serving(api, ns, "iris", 2), "the rollout to converge after the restart", timeout=240, interval=1)

    victim = ready_pod_ips(api, ns)[0]
    victim_pod = next(p for p in pods(api, ns) if p["status"].get("podIP") == victim)
    core.delete_namespaced_pod(victim_pod["metadata"]["name"], ns)
    wait_for(lambda: serving(api, ns, "iris", 2) and victim not in ready_pod_ips(api, ns),
             "a replacement pod Ready", timeout=240, interval=1)

    uids = [p["metadata"]["uid"] for p in pods(api, ns)]
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "iris")

    def nothing_left() -> bool:
        left = (apps.list_namespaced_deployment(ns).items + apps.list_namespaced_replica_set(ns).items
                + core.list_namespaced_service(ns).items + core.list_namespaced_pod(ns).items
                + [c for c in core.list_namespaced_config_map(ns).items if c.metadata.name != "kube-root-ca.crt"])
        return not left

    wait_for(nothing_left, "every child and pod of the ModelDeployment to be gone", timeout=120, interval=0.5)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(uid.replace("-", "")[:12] in netns for uid in uids), "a pod network namespace was left behind"
