"""Targets: URLs, and `md/NAME` resolved through the Kubernetes API (the local control plane)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from modeldeploy.cli import main
from modeldeploy.loadtest.engine import Endpoint
from modeldeploy.loadtest.target import (
    TargetError,
    deployment_name,
    endpoints_for_deployment,
    endpoints_from_slices,
    parse_endpoints,
    resolve_target,
)

REPO = Path(__file__).resolve().parents[2]


def slice_(port_name: str, port: int, *endpoints: tuple[str, bool | None]) -> dict[str, Any]:
    return {
        "ports": [{"name": port_name, "port": port}],
        "endpoints": [
            {"addresses": [address], **({"conditions": {"ready": ready}} if ready is not None else {})}
            for address, ready in endpoints
        ],
    }


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("md/iris", "iris"),
        ("modeldeployment/iris", "iris"),
        ("md/", None),
        ("http://127.0.0.1:1", None),
        ("iris", None),
    ],
)
def test_deployment_name(target: str, name: str | None) -> None:
    assert deployment_name(target) == name


def test_ready_addresses_on_the_http_port_only() -> None:
    slices = [
        slice_("http", 8000, ("10.0.0.2", True), ("10.0.0.1", None), ("10.0.0.3", False)),
        {
            "ports": [{"name": "http", "port": 8000}],
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": True, "terminating": True}}],
        },
        slice_("metrics", 9090, ("10.0.0.4", True)),
        {"ports": None, "endpoints": None},
    ]
    assert endpoints_from_slices(slices) == [Endpoint("10.0.0.1", 8000), Endpoint("10.0.0.2", 8000)]


def test_deployment_endpoints_inside_and_outside_the_cluster() -> None:
    md = {"metadata": {"name": "iris"}, "status": {"endpoint": "http://iris.ml.svc:80"}}
    slices = [slice_("http", 8000, ("10.0.0.1", True))]
    assert endpoints_for_deployment(md, slices, in_cluster=True) == [Endpoint("iris.ml.svc", 80)]
    assert endpoints_for_deployment(md, slices, in_cluster=False) == [Endpoint("10.0.0.1", 8000)]
    with pytest.raises(TargetError, match="no ready pod endpoints"):
        endpoints_for_deployment(md, [slice_("http", 8000, ("10.0.0.1", False))], in_cluster=False)
    with pytest.raises(TargetError, match=r"no status\.endpoint"):
        endpoints_for_deployment({"metadata": {"name": "iris"}}, slices, in_cluster=True)


def test_urls_resolve_without_a_cluster() -> None:
    assert resolve_target("http://127.0.0.1:8000/", None).endpoints == [Endpoint("127.0.0.1", 8000)]
    with pytest.raises(TargetError, match=r"give URLs \(comma-separated\) or md/NAME"):
        resolve_target("iris", None)


def test_comma_separated_urls_are_several_endpoints() -> None:
    target = resolve_target("http://10.1.0.5:8080, https://10.1.0.6/base/,", None)
    assert target.endpoints == [Endpoint("10.1.0.5", 8080), Endpoint("10.1.0.6", 443, tls=True, base_path="/base")]
    assert parse_endpoints("http://a:1,http://b:2") == [Endpoint("a", 1), Endpoint("b", 2)]
    with pytest.raises(TargetError, match="not an http"):
        parse_endpoints("http://a:1,ftp://b")
    with pytest.raises(TargetError, match="no URL"):
        parse_endpoints(" , ")


# against the local control plane ---------------------------------------------------------------
def ensure_crd(api: Any) -> None:
    from kubernetes import client

    extensions = client.ApiextensionsV1Api(api)
    crd = yaml.safe_load((REPO / "crds" / "modeldeployment.yaml").read_text())
    try:
        extensions.create_custom_resource_definition(crd)
    except client.ApiException as err:
        if err.status != 409:
            raise
    deadline = time.monotonic() + 30
    while True:
        conditions = extensions.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        assert time.monotonic() < deadline, "CRD not established"
        time.sleep(0.2)


def publish(api: Any, namespace: str) -> None:
    """md/iris with a selector-less Service and a hand-made EndpointSlice (as the operator's pods would have).

    The API server refuses loopback addresses in EndpointSlices, so the addresses are from
    TEST-NET-1 (192.0.2.0/24): these tests resolve them and never send anything there.
    """
    from kubernetes import client

    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "modeldeploy.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {
                "model": {"name": "iris", "version": "1.0.0"},
                "parameters": {"source": "file:///models/iris", "publicKey": {"secretName": "iris-key"}},
            },
        },
    )
    client.CoreV1Api(api).create_namespaced_service(
        namespace, {"metadata": {"name": "iris"}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8000}]}}
    )
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        namespace,
        {
            "metadata": {"name": "iris-pods", "labels": {"kubernetes.io/service-name": "iris"}},
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 8000, "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "protocol": "TCP"},
            ],
            "endpoints": [
                {"addresses": ["192.0.2.11"], "conditions": {"ready": True}},
                {"addresses": ["192.0.2.10"], "conditions": {"ready": True}},
                {"addresses": ["192.0.2.12"], "conditions": {"ready": False}},
            ],
        },
    )


def test_md_target_resolves_to_the_ready_pods_behind_its_service(devcluster: Any, namespace: str) -> None:
    with devcluster.api_client() as api:
        ensure_crd(api)
        publish(api, namespace)
    target = resolve_target("md/iris", namespace, str(devcluster.admin_kubeconfig))
    assert target.endpoints == [Endpoint("192.0.2.10", 8000), Endpoint("192.0.2.11", 8000)]
    assert target.model == "iris", "from the ModelDeployment's spec.model.name"


def test_missing_md_is_an_error_of_the_command(devcluster: Any, namespace: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "loadtest",
            "md/absent",
            "-n",
            namespace,
            "--kubeconfig",
            str(devcluster.admin_kubeconfig),
            "--duration",
            "1s",
        ],
    )
    assert result.exit_code == 1
    assert f"md/absent in namespace {namespace}: 404" in result.stderr
