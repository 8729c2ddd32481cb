"""Chaos on the real cluster: etcd and the API server restarted and the active operator pod
killed while 100 ModelDeployments are created and then changed. Afterwards every one has
exactly its children at its latest spec, its status is of its generation, and the model
that was serving answered every request throughout."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import urllib3
from kubernetes import client
from node.helpers import wait_for

from devcluster.story import (
    GROUP,
    OPERATOR_NAMESPACE,
    PLURAL,
    VERSION,
    Load,
    active_operator_pod,
    model_deployment,
    service_url,
)
from e2e.helpers import create_md, ready_pods, serving

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

COUNT = 100
OWNED = "app.kubernetes.io/managed-by=modeldeploy"
T = TypeVar("T")


def persist(call: Callable[[], T], what: str, seconds: float = 180.0) -> T | None:
    """``call`` until the API server takes it (it may be down for a while); a 409 means it already did."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except client.ApiException as err:
            if err.status == 409:
                return None
            if err.status is not None and err.status < 500 and err.status != 429:
                raise
            failure: Exception = err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            failure = err
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the API server did not take it within {seconds:.0f} s: {failure}")
        time.sleep(0.5)


def unserved(name: str, source: str) -> dict[str, Any]:
    """A ModelDeployment of no replicas: its children exist, no pod runs (100 pods would not fit here)."""
    body = model_deployment(name, source, replicas=0)
    body["spec"]["env"] = [{"name": "CHAOS_ROUND", "value": "1"}]
    return body


class Writer:
    """Creates the ModelDeployments, then changes each one's spec, retrying through the outages."""

    def __init__(self, api: client.ApiClient, namespace: str, source: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.source = source
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="chaos-writer", daemon=True)

    def create(self, name: str) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, unserved(name, self.source))

    def change(self, name: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"env": [{"name": "CHAOS_ROUND", "value": "2"}]}},
            _content_type="application/merge-patch+json")

    def _run(self) -> None:
        names = [f"md-{index:03d}" for index in range(COUNT)]
        try:
            for name in names:
                persist(functools.partial(self.create, name), f"create {name}")
            for name in names:
                persist(functools.partial(self.change, name), f"change {name}")
        except BaseException as err:  # reported by the test
            self.error = err


def settled(api: client.ApiClient, namespace: str) -> list[dict[str, Any]] | None:
    """All COUNT ModelDeployments at their second spec, each status of its generation."""
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    chaos = [md for md in items if md["metadata"]["name"].startswith("md-")]
    done = [md for md in chaos if md["spec"]["env"][0]["value"] == "2"
            and (md.get("status") or {}).get("observedGeneration") == md["metadata"]["generation"]]
    return chaos if len(done) == COUNT else None


def children(api: client.ApiClient, namespace: str) -> dict[tuple[str, str], Any]:
    """Every object the operator manages in the namespace, by (kind, name)."""
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    listed = {
        "Deployment": apps.list_namespaced_deployment(namespace, label_selector=OWNED).items,
        "Service": core.list_namespaced_service(namespace, label_selector=OWNED).items,
        "ConfigMap": core.list_namespaced_config_map(namespace, label_selector=OWNED).items,
        "PodDisruptionBudget": policy.list_namespaced_pod_disruption_budget(namespace, label_selector=OWNED).items,
    }
    return {(kind, item.metadata.name): item for kind, items in listed.items() for item in items}


def test_etcd_and_the_api_server_restarted_and_the_operator_killed_lose_nothing(
        devcluster: Any, operator: str, api: client.ApiClient, keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    source = f"{bucket_url}/iris-1.0.0.tar.gz"
    create_md(api, ns, model_deployment("served", source, replicas=1))
    wait_for(lambda: serving(api, ns, "served", 1), "the served model", timeout=300, interval=1)
    before = {(p["metadata"]["uid"], p["status"]["containerStatuses"][0]["restartCount"]) for p in ready_pods(api, ns)}
    load = Load(service_url(api, ns, "served"), max_seconds=600).start()
    with client.ApiClient(api.configuration) as writer_api:
        writer = Writer(writer_api, ns, source)
        writer.thread.start()
        time.sleep(3)
        devcluster.restart("etcd", down_seconds=3)
        time.sleep(3)
        leader = persist(lambda: active_operator_pod(api), "the active operator pod")
        assert leader, "an operator pod leads the peering"
        persist(lambda: client.CoreV1Api(api).delete_namespaced_pod(leader, OPERATOR_NAMESPACE, grace_period_seconds=0),
                "kill the active operator pod")
        time.sleep(3)
        devcluster.restart("kube-apiserver", down_seconds=3)
        writer.thread.join(timeout=400)
    assert writer.error is None, f"the writer failed: {writer.error!r}"
    assert not writer.thread.is_alive(), "the writer finished"
    mds = wait_for(lambda: settled(api, ns), f"all {COUNT} ModelDeployments reconciled at their latest generation",
                   timeout=300, interval=2)
    load.stop()
    assert load.ok > 0 and not load.failures, f"the served model failed {len(load.failures)}: {load.failures[:3]}"
    after = {(p["metadata"]["uid"], p["status"]["containerStatuses"][0]["restartCount"]) for p in ready_pods(api, ns)}
    assert after == before, "the served pod neither restarted nor was replaced"

    found = children(api, ns)
    owners = {md["metadata"]["uid"]: md["metadata"]["name"] for md in mds}
    owners[serving(api, ns, "served", 1)["metadata"]["uid"]] = "served"  # type: ignore[index]
    expected = {(kind, name) for md in owners.values()
                for kind, name in (("Deployment", md), ("Service", md), ("ConfigMap", f"{md}-config"))}
    orphans = [key for key, item in found.items()
               if not any(ref.uid in owners for ref in item.metadata.owner_references or [])]
    assert not orphans, f"children without a live owner: {orphans[:5]}"
    missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"

    apps = client.AppsV1Api(api)
    for md in mds:
        name = md["metadata"]["name"]
        deployment = found[("Deployment", name)]
        env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env or []}
        assert env.get("CHAOS_ROUND") == "2", f"{name}: the Deployment runs the latest spec"
        revision = int(deployment.metadata.annotations.get("deployment.kubernetes.io/revision", "0"))
        sets = apps.list_namespaced_replica_set(ns, label_selector=f"app.kubernetes.io/instance={name}").items
        assert revision <= 2 and len(sets) <= 2, f"{name}: revision {revision}, {len(sets)} ReplicaSets: a flip back"
