"""End-to-end fixtures on the real node: the operator as the Pod of ``manifests/``, MinIO in the
cluster holding signed iris parameters, and namespaces with the key and bucket Secrets."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client

from devcluster import images
from devcluster.story import OPERATOR, Bucket, Published, add_model_secrets, install_operator, publish, start_bucket


@pytest.fixture(scope="session")
def operator(devcluster: Any, node: str) -> str:
    """The operator installed with ``kubectl apply -k manifests/`` and rolled out (two replicas, kopf peering)."""
    install_operator(devcluster)
    return OPERATOR


@pytest.fixture(scope="session")
def bucket(devcluster: Any, node: str) -> Bucket:
    return start_bucket(devcluster, images.minio_image()[0])


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish(tmp_path_factory.mktemp("story"))


@pytest.fixture(scope="module")
def bucket_url(bucket: Bucket, published: Published) -> str:
    """``s3://models/PREFIX``: this module's signed and tampered archives with their signatures."""
    return bucket.upload(published, f"e2e-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def keyed_namespace(api: client.ApiClient, namespace: str, published: Published, bucket: Bucket) -> str:
    """A fresh namespace holding the public key and the bucket credentials (only public keys enter the cluster)."""
    add_model_secrets(api, namespace, published, bucket)
    return namespace
