"""The real control plane does what the operator relies on: schema validation, controllers,
scheduling, RBAC, garbage collection, and a matching kubectl."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from devcluster import build
from devcluster.cluster import Cluster, HostNetworkBusy, KubectlError

pytestmark = pytest.mark.cluster

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "condition",
               describe: Callable[[], str] = str) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` (and ``describe()``) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; {describe()}")


def widget_crd(group: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "minLength": 1},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                },
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": schema}, "subresources": {"status": {}}}],
        },
    }


def test_crd_schema_rejects_an_invalid_object(api: client.ApiClient, namespace: str) -> None:
    group = f"{namespace}.devcluster.test"
    extensions = client.ApiextensionsV1Api(api)
    crd = extensions.create_custom_resource_definition(widget_crd(group))
    try:
        eventually(lambda: any(c.type == "Established" and c.status == "True"
                               for c in extensions.read_custom_resource_definition(crd.metadata.name).status.conditions or []),
                   what="the CRD to be established")
        custom = client.CustomObjectsApi(api)

        def create(spec: dict[str, Any]) -> dict[str, Any]:
            body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": f"w{uuid.uuid4().hex[:6]}"}, "spec": spec}
            return dict(custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", body))

        # Discovery of a new group can lag the Established condition by a moment.
        eventually(lambda: _created(create, {"image": "x", "replicas": 2}), what="a valid Widget to be accepted")
        with pytest.raises(client.ApiException) as caught:
            create({"image": "x", "replicas": 11})
        assert caught.value.status == 422
        assert "spec.replicas" in caught.value.body
        with pytest.raises(client.ApiException) as missing:
            create({"replicas": 1})
        assert missing.value.status == 422 and "spec.image" in missing.value.body
    finally:
        extensions.delete_custom_resource_definition(crd.metadata.name)


def _created(create: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any]) -> bool:
    try:
        create(spec)
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


@pytest.fixture
def node(api: client.ApiClient) -> Iterator[str]:
    """A Node object that reports Ready, as a kubelet would (no kubelet runs)."""
    core = client.CoreV1Api(api)
    name = f"node-{uuid.uuid4().hex[:6]}"
    core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    status = {"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }}
    core.patch_node_status(name, status)
    try:
        yield name
    finally:
        # No kubelet confirms the deletion of its pods, so do it as one would.
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        core.delete_node(name)


def test_deployment_gets_replicaset_and_pods_bound_to_a_node(api: client.ApiClient, namespace: str, node: str) -> None:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "web", "image": "example.invalid/web:1"}],
            }},
        },
    }
    created = client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)

    def replicaset() -> client.V1ReplicaSet | None:
        items = apps.list_namespaced_replica_set(namespace).items
        return next((rs for rs in items if any(o.uid == created.metadata.uid for o in rs.metadata.owner_references or [])), None)

    def describe() -> str:
        pods = core.list_namespaced_pod(namespace).items
        taints = core.read_node(node).spec.taints
        events = core.list_namespaced_event(namespace).items
        return (f"pods: {[(p.metadata.name, p.spec.node_name, p.status.phase) for p in pods]}; "
                f"node taints: {taints}; events: {[(e.reason, e.message) for e in events][-5:]}")

    rs = eventually(replicaset, what="the controller-manager to create a ReplicaSet", describe=describe)

    def bound_pods() -> list[client.V1Pod] | None:
        pods = [p for p in core.list_namespaced_pod(namespace).items
                if any(o.uid == rs.metadata.uid for o in p.metadata.owner_references or [])]
        return pods if len(pods) == 2 and all(p.spec.node_name == node for p in pods) else None

    pods = eventually(bound_pods, what=f"the scheduler to bind 2 pods to {node}", describe=describe)
    assert all(p.metadata.owner_references[0].kind == "ReplicaSet" for p in pods)
    assert all(any(c.type == "PodScheduled" and c.status == "True" for c in p.status.conditions) for p in pods)


def test_identity_without_role_is_forbidden_until_bound(devcluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    with devcluster.api_client(devcluster.kubeconfig_for_service_account(namespace, "operator")) as as_sa:
        sa_core = client.CoreV1Api(as_sa)
        with pytest.raises(client.ApiException) as caught:
            sa_core.list_namespaced_config_map(namespace)
        assert caught.value.status == 403
        assert "system:serviceaccount:" + namespace + ":operator" in caught.value.body

        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        })
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "operator-reads-cm"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        })
        eventually(lambda: _allowed(lambda: sa_core.list_namespaced_config_map(namespace)),
                   timeout=15, what="the RoleBinding to take effect")
        with pytest.raises(client.ApiException) as other_verb:
            sa_core.create_namespaced_config_map(namespace, {"metadata": {"name": "nope"}})
        assert other_verb.value.status == 403
        with pytest.raises(client.ApiException) as other_namespace:
            sa_core.list_namespaced_config_map("default")
        assert other_namespace.value.status == 403


def test_user_certificate_identity_is_subject_to_rbac(devcluster: Cluster, namespace: str) -> None:
    kubeconfig = devcluster.kubeconfig_for_user("alice", ["developers"])
    with devcluster.api_client(kubeconfig) as as_alice:
        review = client.AuthenticationV1Api(as_alice).create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert review.status.user_info.username == "alice"
        assert "developers" in review.status.user_info.groups
        with pytest.raises(client.ApiException) as caught:
            client.CoreV1Api(as_alice).list_namespaced_secret(namespace)
        assert caught.value.status == 403


def _allowed(call: Callable[[], object]) -> bool:
    try:
        call()
    except client.ApiException as err:
        if err.status == 403:
            return False
        raise
    return True


def test_deleting_an_owner_garbage_collects_its_dependants(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    for name in ("child-a", "child-b"):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name, "ownerReferences": [reference]}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "bystander"}})

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def dependants_gone() -> bool:
        names = {s.metadata.name for s in core.list_namespaced_secret(namespace).items}
        return not names & {"child-a", "child-b"}

    eventually(dependants_gone, what="the garbage collector to delete the dependants")
    assert core.read_namespaced_secret("bystander", namespace).metadata.name == "bystander"


def test_kubectl_matches_the_server_and_applies_a_kustomization(
    devcluster: Cluster, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    versions = json.loads(devcluster.kubectl_run("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == build.K8S_VERSION
    assert versions["serverVersion"]["gitVersion"] == build.K8S_VERSION

    (tmp_path / "kustomization.yaml").write_text(f"namespace: {namespace}\nconfigMapGenerator:\n- name: settings\n  literals: [mode=demo]\n")
    devcluster.kubectl_run("apply", "-k", str(tmp_path))
    with pytest.raises(KubectlError) as failed:
        devcluster.kubectl_run("get", "widgets.nowhere")
    assert str(failed.value).startswith("kubectl get widgets.nowhere failed (exit 1):\n"), failed.value
    assert "doesn't have a resource type" in failed.value.stderr
    names = [cm.metadata.name for cm in client.CoreV1Api(api).list_namespaced_config_map(namespace).items]
    assert any(n.startswith("settings-") for n in names)


def test_a_second_cluster_on_the_machine_is_told_which_one_holds_the_node_network(
        devcluster: Cluster, node: str, tmp_path: Path) -> None:
    other = Cluster(tmp_path / "other")
    with pytest.raises(HostNetworkBusy, match=f"held by the cluster in {devcluster.root}.*devcluster down"):
        other.up(node_network=True, host_network_wait=0)
    assert other.server is None and other.network is None, "nothing of the second cluster was started"
    assert devcluster.holds_host_network(), "the holder keeps running"
