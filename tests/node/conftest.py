"""Fixtures for the node tests: the admin CoreV1Api (the ``node`` fixture starts the node)."""

from __future__ import annotations

import pytest
from kubernetes import client


@pytest.fixture
def core(api: client.ApiClient, node: str) -> client.CoreV1Api:
    return client.CoreV1Api(api)
