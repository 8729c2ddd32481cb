"""gRPC on the real node: `spec.protocols: [rest, grpc]` gives the pods a gRPC port the kubelet
probes for readiness (grpc.health.v1) and the Service a `grpc` port, which Triton's own gRPC
client reaches through the ClusterIP, as a client in the cluster would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from kubernetes import client
from node.helpers import wait_for

from devcluster.iris import flowers
from devcluster.story import model_deployment, service_url
from e2e.helpers import create_md, ready_pods, serving

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


def test_grpc_is_exposed_probed_and_answers_through_the_service(
        operator: str, api: client.ApiClient, keyed_namespace: str, bucket_url: str) -> None:
    ns = keyed_namespace
    body = model_deployment("iris", f"{bucket_url}/iris-1.0.0.tar.gz", replicas=1)
    body["spec"].update(protocols=["rest", "grpc"], probes={"maxLoadSeconds": 60, "grpcReadiness": True},
                        service={"grpcPort": 9001})
    create_md(api, ns, body)
    wait_for(lambda: serving(api, ns, "iris", 1), "iris serving, ready by its gRPC health", timeout=300, interval=1)
    server = next(c for c in ready_pods(api, ns)[0]["spec"]["containers"] if c["name"] == "server")
    assert server["readinessProbe"]["grpc"] == {"port": 9000, "service": ""}, "the kubelet probes gRPC health"

    service_url(api, ns, "iris")  # kube-proxy has written the Service's rules
    found = client.CoreV1Api(api).read_namespaced_service("iris", ns)
    grpc_port = next(p for p in found.spec.ports if p.name == "grpc")
    assert (grpc_port.port, grpc_port.app_protocol) == (9001, "kubernetes.io/h2c")
    triton = triton_grpc.InferenceServerClient(f"{found.spec.cluster_ip}:9001")
    try:
        assert triton.is_server_ready() and triton.is_model_ready("iris")
        rows = [list(flower.values()) for flower in flowers()[:3]]
        tensor = triton_grpc.InferInput("input-0", [len(rows), 4], "FP64")
        tensor.set_data_from_numpy(np.array(rows, dtype=np.float64))
        result: Any = triton.infer("iris", [tensor])
        species = [value.decode() for value in result.as_numpy("species")]
    finally:
        triton.close()
    assert species == ["setosa", "setosa", "setosa"], species
