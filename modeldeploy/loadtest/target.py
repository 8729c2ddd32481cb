"""Where the load goes: server URLs, or a ModelDeployment resolved through the Kubernetes API.

`http://a:8080,http://b:8080`: the engine spreads connections over the listed servers
(e.g. the pods of one revision, as the analysis Job names them).

`md/NAME -n NS`: inside a cluster (KUBERNETES_SERVICE_HOST set) the load goes to the
ModelDeployment's `status.endpoint` (its Service, which spreads connections over the
pods); outside, that DNS name does not resolve, so it goes straight to the ready pod
addresses of its Service's EndpointSlices (the operator names the Service after the
ModelDeployment), and the engine spreads connections over them.
The pure functions here parse and pick; `resolve_target` is the only code that calls the API.
Also reads the model's name and input schema from the server's metadata endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx

from modeldeploy.contract.api import GROUP, PLURAL, VERSION
from modeldeploy.loadtest.engine import Endpoint

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PORT_NAME = "http"
MD_PREFIXES = ("md/", "modeldeployment/", "modeldeployments/")


class TargetError(Exception):
    """The target cannot be resolved or does not describe a served model."""


@dataclass(frozen=True)
class Target:
    """Resolved endpoints, and the model name when the target implies one."""

    endpoints: list[Endpoint]
    model: str | None = None


def parse_endpoints(urls: str) -> list[Endpoint]:
    """Comma-separated http(s) URLs -> their endpoints, in order.

    Raises:
        TargetError: no URL, or a part that is not an http(s) URL.
    """
    try:
        endpoints = [Endpoint.parse(url.strip()) for url in urls.split(",") if url.strip()]
    except ValueError as err:
        raise TargetError(f"{err}; give URLs (comma-separated) or md/NAME") from err
    if not endpoints:
        raise TargetError(f"no URL in {urls!r}; give URLs (comma-separated) or md/NAME")
    return endpoints


def deployment_name(target: str) -> str | None:
    """NAME for `md/NAME` (or `modeldeployment/NAME`), None for anything else."""
    for prefix in MD_PREFIXES:
        if target.startswith(prefix) and len(target) > len(prefix):
            return target[len(prefix) :]
    return None


def endpoints_from_slices(slices: Iterable[Mapping[str, Any]], port_name: str = PORT_NAME) -> list[Endpoint]:
    """The ready, not terminating addresses on the named port of EndpointSlices (dicts, camelCase keys).

    An endpoint without `conditions.ready` counts as ready, as the API documents.
    """
    found: list[Endpoint] = []
    for slice_ in slices:
        ports = [p["port"] for p in slice_.get("ports") or [] if p.get("name", "") == port_name and p.get("port")]
        if not ports:
            continue
        for endpoint in slice_.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            found += [Endpoint(address, ports[0]) for address in endpoint.get("addresses", [])]
    return sorted(set(found), key=lambda e: (e.host, e.port))


def endpoints_for_deployment(
    deployment: Mapping[str, Any], slices: list[Mapping[str, Any]], in_cluster: bool
) -> list[Endpoint]:
    """Pick the endpoints of a ModelDeployment (as a dict) given its Service's EndpointSlices.

    Raises:
        TargetError: nothing to send load to.
    """
    name = deployment.get("metadata", {}).get("name", "?")
    status_endpoint = (deployment.get("status") or {}).get("endpoint")
    if in_cluster:
        if not status_endpoint:
            raise TargetError(f"md/{name} has no status.endpoint yet")
        return [Endpoint.parse(status_endpoint)]
    endpoints = endpoints_from_slices(slices)
    if not endpoints:
        raise TargetError(f"md/{name}: its Service has no ready pod endpoints")
    return endpoints


def resolve_target(target: str, namespace: str | None, kubeconfig: str | None = None) -> Target:
    """Comma-separated URLs, or `md/NAME` looked up in `namespace` (default: the kubeconfig's namespace).

    Raises:
        TargetError: not URLs, or the ModelDeployment cannot be read or has no endpoints.
    """
    name = deployment_name(target)
    if name is None:
        return Target(parse_endpoints(target))
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and kubeconfig is None
    try:
        if in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.ApiClient(configuration)
            namespace = namespace or _incluster_namespace()
        else:
            api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            context = config.list_kube_config_contexts(config_file=kubeconfig)[1]["context"]  # type: ignore[no-untyped-call]
            namespace = namespace or context.get("namespace", "default")
        with api:
            deployment = cast(
                dict[str, Any],
                client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
            )
            slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
                namespace, label_selector=f"{SERVICE_NAME_LABEL}={name}"
            )
            slice_dicts = [api.sanitize_for_serialization(s) for s in slices.items]  # type: ignore[no-untyped-call]
    except ApiException as err:
        raise TargetError(f"md/{name} in namespace {namespace}: {err.status} {err.reason}") from err
    except ConfigException as err:
        raise TargetError(f"no Kubernetes configuration: {err}") from err
    model = (deployment.get("spec") or {}).get("model", {}).get("name")
    return Target(endpoints_for_deployment(deployment, slice_dicts, in_cluster), model)


def _incluster_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    with open(path) as file:
        return file.read().strip()


@dataclass(frozen=True)
class ModelInfo:
    """What the load test needs from the model's metadata."""

    name: str
    input_schema: dict[str, Any]
    example: dict[str, Any] | None


def fetch_model_info(endpoint: Endpoint, model: str | None, timeout: float = 10.0) -> ModelInfo:
    """Ask the server which model it serves (when `model` is None) and for its input schema.

    Raises:
        TargetError: the server is unreachable, serves several models and none was named,
            does not know the model, or the model is not ready.
    """
    try:
        with httpx.Client(base_url=endpoint.url, timeout=timeout) as http:
            if model is None:
                models = http.get("/api/models").raise_for_status().json()["models"]
                if len(models) != 1:
                    names = ", ".join(m["name"] for m in models)
                    raise TargetError(f"{endpoint.url} serves {len(models)} models ({names}): name one with --model")
                model = str(models[0]["name"])
            metadata = http.get(f"/api/models/{model}/metadata").raise_for_status().json()
    except httpx.HTTPStatusError as err:
        raise TargetError(f"{err.request.url}: HTTP {err.response.status_code}: {err.response.text[:200]}") from err
    except httpx.HTTPError as err:
        raise TargetError(f"{endpoint.url}: {err}") from err
    status = metadata.get("status") or {}
    if status.get("ready") is False:
        raise TargetError(f"model {model!r} at {endpoint.url} is not ready ({status.get('state', 'unknown state')})")
    return ModelInfo(model, metadata["inputSchema"], metadata.get("example"))
