"""pytest fixtures for the local control plane (register with ``pytest_plugins``).

``devcluster`` (session): a running ``Cluster`` with its node network; reuses a healthy one in
the state directory (``build/devcluster`` under the rootdir, or ``$MODELDEPLOY_DEVCLUSTER_DIR``),
shares it with concurrent sessions, and stops it when the last session that started it ends
(unless ``--devcluster-keep``). ``node`` (session): the real node (kubelet, containerd,
kube-proxy, CoreDNS) on it, with the project's images loaded. ``cordoned`` (module): the node
cordoned for a module whose tests play the kubelet themselves on pods nothing schedules.
``node_images`` (session): {image reference: docker archive} of every node image, built or reused.
``api`` (function): the admin's ``kubernetes`` ApiClient. ``namespace`` (function): a fresh
namespace, deleted afterwards. Tests using ``devcluster`` are marked ``cluster`` automatically.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from devcluster import build, images
from devcluster.cluster import Cluster, default_state_dir, shared

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

_ROOT = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--devcluster-keep", action="store_true",
        help="leave the control plane running after the session, for the next run to reuse",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "teardown: takes the session's cluster down; runs after every other test")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "devcluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
    if config.getoption("--devcluster-keep"):  # the cluster is to stay up: nothing may take it down
        teardown = [item for item in items if item.get_closest_marker("teardown")]
        if teardown:
            config.hook.pytest_deselected(items=teardown)
            items[:] = [item for item in items if item not in teardown]
    items.sort(key=lambda item: item.get_closest_marker("teardown") is not None)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    root = config.stash.get(_ROOT, None)
    if root is not None and (terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")):
        terminalreporter.write_line(f"devcluster: component logs kept in {root / 'logs'}")


@pytest.fixture(scope="session")
def devcluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The shared local control plane (admin, per-identity kubeconfigs, clients)."""
    build.ensure_binaries()
    root = default_state_dir(request.config.rootpath)
    request.config.stash[_ROOT] = root
    # A CI runner that times out sends SIGTERM: unwind like Ctrl-C so the cluster is stopped.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with shared(root, owner="pytest", keep=request.config.getoption("--devcluster-keep"), node_network=True) as cluster:
            yield cluster
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def node(devcluster: Cluster) -> str:
    """The real node's name: pods bound to it run in containerd from the project's images.

    Started once and left running for the session (the cluster's ``down`` tears it down).
    """
    return devcluster.start_node().name


@pytest.fixture(scope="module")
def cordoned(devcluster: Cluster) -> Iterator[None]:
    """No pod is scheduled for this module (the node, if any, is cordoned), so tests may write pod status."""
    from kubernetes import client

    plan = devcluster.node_plan
    with devcluster.api_client() as api:
        core = client.CoreV1Api(api)
        if plan is not None:
            core.patch_node(plan.name, {"spec": {"unschedulable": True}})
        try:
            yield
        finally:
            if plan is not None:
                core.patch_node(plan.name, {"spec": {"unschedulable": False}})


@pytest.fixture
def api(devcluster: Cluster) -> Iterator[ApiClient]:
    """The admin's ``kubernetes`` client (``Cluster.api_client``), closed after the test."""
    with devcluster.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="session")
def node_images() -> dict[str, Path]:
    """Every image the node runs, built or reused (``make images`` builds them before the tests)."""
    return images.ensure_images()


def namespace_name(test_name: str) -> str:
    """A valid, unique namespace name derived from the test's name."""
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower().removeprefix("test_").replace("_", "-")).strip("-")
    return f"{stem[:40].rstrip('-') or 't'}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(devcluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (ready: its ``default`` ServiceAccount exists), deleted afterwards."""
    from kubernetes import client, watch

    name = namespace_name(request.node.name)
    with devcluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        try:
            # Pods are refused until the controller-manager has created the default ServiceAccount.
            for _ in watch.Watch().stream(core.list_namespaced_service_account, name,
                                          field_selector="metadata.name=default", timeout_seconds=30):
                break
            else:
                raise TimeoutError(f"no default ServiceAccount in namespace {name} after 30s")
            yield name
        finally:
            core.delete_namespace(name)
