"""End-to-end fixtures: the process node, the installed operator under its ServiceAccount, and
signed iris parameters served over HTTP on the node's bridge address (reachable from pod netns)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from model_operator.localrun import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, OperatorProcess, install
from modeldeploy.demo import serve_directory
from modeldeploy.story import Published, key_secret, publish

SERVER_IMAGE = "ghcr.io/modeldeploy/modeldeploy-server:0.1.0"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish(tmp_path_factory.mktemp("story"))


@pytest.fixture(scope="module")
def bucket_url(devcluster: Any, node: str, published: Published) -> Iterator[str]:
    """The bucket over HTTP on the node's InternalIP (its bridge gateway), so init containers reach it."""
    with devcluster.api_client() as api:
        addresses = client.CoreV1Api(api).read_node(node).status.addresses
    gateway = next(a.address for a in addresses if a.type == "InternalIP")
    with serve_directory(published.bucket, host=gateway) as url:
        yield url


@pytest.fixture(scope="module")
def operator(devcluster: Any, node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    install(devcluster.kubectl, devcluster.admin_kubeconfig)
    runner = OperatorProcess(
        devcluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT),
        tmp_path_factory.mktemp("operator") / "operator.log", SERVER_IMAGE,
    )
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def api(devcluster: Any) -> Iterator[client.ApiClient]:
    with devcluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def keyed_namespace(api: client.ApiClient, namespace: str, published: Published) -> str:
    """A fresh namespace holding the public key Secret (only the public key enters the cluster)."""
    client.CoreV1Api(api).create_namespaced_secret(namespace, key_secret(published.public_key))
    return namespace


def path_of(published: Published, name: str) -> Path:
    return published.bucket / name
