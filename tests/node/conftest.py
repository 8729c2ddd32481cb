"""Fixtures for the node tests: the admin CoreV1Api (the ``node`` fixture starts the node)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client


@pytest.fixture
def core(devcluster: Any, node: str) -> Iterator[client.CoreV1Api]:
    with devcluster.api_client() as api:
        yield client.CoreV1Api(api)
