"""Helpers for tests that run pods on the node: create, wait, read status."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as err:
            if err.status != 404:
                raise
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def create(core: client.CoreV1Api, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a namespaced core object from its manifest; return it as the API's JSON."""
    calls = {
        "Pod": core.create_namespaced_pod, "ConfigMap": core.create_namespaced_config_map,
        "Secret": core.create_namespaced_secret, "Service": core.create_namespaced_service,
        "PersistentVolumeClaim": core.create_namespaced_persistent_volume_claim,
    }
    created = calls[body["kind"]](namespace, body)
    return dict(core.api_client.sanitize_for_serialization(created))


def pod(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any]:
    return dict(core.api_client.sanitize_for_serialization(core.read_namespaced_pod(name, namespace)))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def container_status(obj: dict[str, Any], name: str, init: bool = False) -> dict[str, Any] | None:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((s for s in (obj.get("status") or {}).get(key) or [] if s["name"] == name), None)


def ready(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    found = pod(core, namespace, name)
    cond = condition(found, "Ready")
    return found if cond and cond["status"] == "True" else None


def gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def pod_body(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": containers, **spec}}
