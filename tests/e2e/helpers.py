"""Reading and changing ModelDeployments and their pods on the real cluster, as the e2e tests do."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from devcluster.story import GROUP, PLURAL, VERSION, get_md, md_condition, ready_endpoints


def create_md(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def patch_md(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}, _content_type="application/merge-patch+json")


def pods(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CoreV1Api(api).list_namespaced_pod(namespace)
    return [api.sanitize_for_serialization(p) for p in listed.items]


def ready_pods(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    return sorted((p for p in pods(api, namespace) if not p["metadata"].get("deletionTimestamp")
                   and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])),
                  key=lambda p: p["metadata"]["name"])


def ready_pod_names(api: client.ApiClient, namespace: str) -> list[str]:
    return [p["metadata"]["name"] for p in ready_pods(api, namespace)]


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
    return md if complete and rolled and len(ready_endpoints(api, namespace, name)) == replicas else None
