"""The only module that talks to the Kubernetes API server.

Children are written with server-side apply under one field manager, so a re-apply of the
same render is a no-op on the server and fields other managers own (e.g. the HPA's replica
count) are left alone. The synchronous `kubernetes` client runs in worker threads so the
operator's event loop never blocks.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from model_operator.render import Manifest
from modeldeploy.contract.api import GROUP, PLURAL, VERSION

FIELD_MANAGER = "modeldeploy-operator"


def new_api_client() -> client.ApiClient:
    """An API client from the in-cluster ServiceAccount, else from `$KUBECONFIG`/~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration,
        )
    configuration.connection_pool_maxsize = 16
    return client.ApiClient(configuration)


class Kube:
    """A thin async facade over the API calls the operator makes (and RBAC grants)."""

    def __init__(self, api_client: client.ApiClient, dynamic: DynamicClient) -> None:
        self._api_client = api_client
        self._dynamic = dynamic
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    @classmethod
    async def connect(cls) -> Kube:
        """Connect like kopf does (in-cluster first, then kubeconfig) and run API discovery."""
        api_client = new_api_client()
        return cls(api_client, await asyncio.to_thread(DynamicClient, api_client))

    def close(self) -> None:
        """Release the connection pool."""
        self._api_client.close()  # type: ignore[no-untyped-call]

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def _apply(self, manifest: Manifest) -> Manifest:
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]

        def apply() -> Manifest:
            return dict(resource.server_side_apply(
                body=manifest, name=name, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True,
            ).to_dict())

        try:
            return apply()
        except ApiException as err:
            if err.status != 422:
                raise
            # A hand edit can leave list entries owned by another manager that clash with ours
            # (e.g. a second Service port named "http"); apply cannot remove fields it does not
            # own, so put our lists back wholesale with a merge patch, then apply again.
            resource.patch(body=manifest, name=name, namespace=namespace,
                           content_type="application/merge-patch+json", field_manager=FIELD_MANAGER)
            return apply()

    async def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply `manifest` (forcing conflicts); returns the object as stored."""
        return await asyncio.to_thread(self._apply, manifest)

    def _get(self, api_version: str, kind: str, name: str, namespace: str) -> Manifest | None:
        try:
            found = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(found.to_dict())

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> Manifest | None:
        """The object, or None if it does not exist."""
        return await asyncio.to_thread(self._get, api_version, kind, name, namespace)

    def _delete_owned(self, api_version: str, kind: str, name: str, namespace: str, owner_uid: str) -> bool:
        found = self._get(api_version, kind, name, namespace)
        refs = (found or {}).get("metadata", {}).get("ownerReferences") or []
        if not any(ref.get("uid") == owner_uid for ref in refs):
            return False
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace)
        except ApiException as err:
            if err.status != 404:
                raise
        return True

    async def delete_owned(self, api_version: str, kind: str, name: str, namespace: str, owner_uid: str) -> bool:
        """Delete the object if it exists and `owner_uid` owns it; True if it was deleted."""
        return await asyncio.to_thread(self._delete_owned, api_version, kind, name, namespace, owner_uid)

    def _list_pods(self, namespace: str, selector: str) -> list[Manifest]:
        pods = self._core.list_namespaced_pod(namespace, label_selector=selector)
        return [self._api_client.sanitize_for_serialization(pod) for pod in pods.items]  # type: ignore[no-untyped-call]

    async def list_pods(self, namespace: str, selector: str) -> list[Manifest]:
        """Pods in `namespace` matching the label `selector`, as plain dicts."""
        return await asyncio.to_thread(self._list_pods, namespace, selector)

    def _ensure_peering(self, name: str) -> None:
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
        try:
            self._custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
        except ApiException as err:
            if err.status != 409:
                raise

    async def ensure_peering(self, name: str) -> None:
        """Create kopf's ClusterKopfPeering object `name` unless it exists (replicas meet there)."""
        await asyncio.to_thread(self._ensure_peering, name)

    def _patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            _content_type="application/merge-patch+json",
        )

    async def patch_status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        """Merge-patch the ModelDeployment's status subresource."""
        await asyncio.to_thread(self._patch_status, name, namespace, status)
