"""One local control plane in one state directory: bring it up, reuse it, take it down.

Owns the state directory (PKI, kubeconfigs, etcd data, logs, ``state.json``) and the
identities tests use. Process mechanics live in ``devcluster.process``, command lines in
``devcluster.components``; this module only sequences them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from devcluster import build, pki, process
from devcluster.components import ADMIN, CONTROL_PLANE, HOST, SERVICE_CIDR, Layout, Ports, control_plane
from devcluster.kubeconfig import render_kubeconfig, write_kubeconfig
from devcluster.node import addons, network, runtime
from devcluster.node.config import NodeLayout, NodePlan
from devcluster.ports import free_ports
from devcluster.process import Handle

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

logger = logging.getLogger(__name__)

COMPONENT_USERS = ("system:kube-controller-manager", "system:kube-scheduler")
KUBELET_CLIENT = "kube-apiserver-kubelet-client"
FRONT_PROXY_CLIENT = "front-proxy-client"
START_TIMEOUT = 60.0
DEFAULT_NODE = "devnode"
TOKEN_SECONDS = 24 * 3600
# One node network per machine: two kubelets and kube-proxies would fight over the same iptables chains.
HOST_NETWORK_CLAIM = Path(os.environ.get("MODELDEPLOY_HOST_NETWORK_CLAIM", "/run/modeldeploy-devcluster.json"))
# How long to wait for another checkout's test session to give the node network back.
HOST_NETWORK_WAIT = float(os.environ.get("MODELDEPLOY_HOST_NETWORK_WAIT", "2700"))


def default_state_dir(base: Path | None = None) -> Path:
    """``$MODELDEPLOY_DEVCLUSTER_DIR`` or ``build/devcluster`` under ``base`` (default: cwd)."""
    override = os.environ.get("MODELDEPLOY_DEVCLUSTER_DIR")
    return Path(override) if override else (base or Path.cwd()) / "build" / "devcluster"


class HostNetworkBusy(RuntimeError):
    """Another cluster on this machine holds the node network; the message names it and how to free it."""


class ToolError(subprocess.CalledProcessError):
    """A harness tool (`tool`) exited non-zero; the message names its arguments and carries its stderr."""

    tool = "tool"

    def __init__(self, tool_args: tuple[str, ...], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)
        self.tool_args = tool_args

    def __str__(self) -> str:
        return f"{self.tool} {' '.join(self.tool_args)} failed (exit {self.returncode}):\n{self.stderr}"


class KubectlError(ToolError):
    """``kubectl`` exited non-zero."""

    tool = "kubectl"


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    running: bool
    healthy: bool
    log: Path


def format_status(server: str | None, statuses: list[ComponentStatus]) -> str:
    """Human-readable ``python -m devcluster status``."""
    if server is None:
        return "no cluster"
    lines = [f"server {server}"]
    for s in statuses:
        state = "healthy" if s.healthy else ("running, not healthy" if s.running else "NOT RUNNING")
        lines.append(f"{s.name:<24} pid {s.pid:<8} {state:<21} log {s.log}")
    return "\n".join(lines)


class Cluster:
    """The control plane recorded in ``root`` (which need not be running)."""

    def __init__(self, root: Path | None = None) -> None:
        self.layout = Layout((root or default_state_dir()).resolve())
        self.binaries = build.binaries()

    # -- state ---------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def admin_kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig

    @property
    def kubectl(self) -> Path:
        return self.binaries.kubectl

    def kubectl_command(self, *args: str) -> list[str]:
        """The command line of ``kubectl ARGS`` as the admin (for a long-running ``Popen``, e.g. port-forward)."""
        return [str(self.kubectl), "--kubeconfig", str(self.admin_kubeconfig), *args]

    def kubectl_run(self, *args: str, stdin: str | None = None, check: bool = True,
                    timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl ARGS`` as the admin, output captured as text; ``stdin`` is fed to it.

        With ``check``, a non-zero exit raises ``KubectlError`` (a ``CalledProcessError``) with kubectl's stderr.
        """
        result = subprocess.run(self.kubectl_command(*args), input=stdin, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise KubectlError(args, result)
        return result

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.layout.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _write_state(self, server: str, owner: str, handles: list[Handle], **extra: Any) -> None:
        """Record the cluster; ``extra`` (``network``, ``node``) replaces those keys, others are kept."""
        previous = self._state()
        state = {"server": server, "owner": owner, "k8s": build.K8S_VERSION, "etcd": build.ETCD_VERSION,
                 "processes": [asdict(h) for h in handles],
                 "network": previous.get("network"), "node": previous.get("node"), **extra}
        self.layout.state_file.write_text(json.dumps(state, indent=2, default=str))

    @property
    def network(self) -> network.HostNetwork | None:
        """The host network the cluster made for its node (``up(node_network=True)``), if any."""
        recorded = self._state().get("network")
        return network.HostNetwork(recorded["pod_cidr"], recorded["service_cidr"]) if recorded else None

    @property
    def node_plan(self) -> NodePlan | None:
        """The running node's names, addresses and ports, if a node was started."""
        recorded = self._state().get("node")
        return NodePlan(**recorded) if recorded else None

    def handles(self) -> list[Handle]:
        return [process.handle_from_dict(p) for p in self._state().get("processes", [])]

    @property
    def server(self) -> str | None:
        return self._state().get("server")

    @property
    def owner(self) -> str | None:
        """Who started the running cluster (``cli``, ``pytest``, ...)."""
        return self._state().get("owner")

    def status(self) -> list[ComponentStatus]:
        return [ComponentStatus(h.name, h.pid, process.alive(h), process.healthy(h), h.log) for h in self.handles()]

    def is_healthy(self) -> bool:
        """Every recorded process runs and answers its health check, at our versions."""
        state, handles = self._state(), self.handles()
        versions_match = state.get("k8s") == build.K8S_VERSION and state.get("etcd") == build.ETCD_VERSION
        complete = set(CONTROL_PLANE) <= {h.name for h in handles}
        return versions_match and complete and all(process.healthy(h) for h in handles)

    def holds_host_network(self) -> bool:
        """The cluster runs with a node network (what the machine's claim stands for)."""
        return self.network is not None and self.is_healthy()

    # -- lifecycle -----------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state directory's lock: one process at a time starts or stops it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _flock(self.root / ".lock", fcntl.LOCK_EX):
            yield

    def up(self, timeout: float = START_TIMEOUT, owner: str = "cli", node_network: bool = False,
           host_network_wait: float = HOST_NETWORK_WAIT) -> Cluster:
        """Reuse a healthy cluster in ``root`` or start a fresh one; return once all are ready.

        ``node_network`` (root only) first makes the node's bridge, whose address the API server
        then listens on, so pods (the operator, CoreDNS) reach it through the ``kubernetes``
        Service; without it everything listens on loopback and no node can run. The machine
        has one node network: while another checkout's test session holds it, this waits up to
        ``host_network_wait`` seconds; a cluster someone keeps up is named at once.
        Callers that may race with other processes hold ``locked()`` around this.
        """
        if self.is_healthy() and (self.network is not None or not node_network):
            logger.info("reusing the running cluster in %s", self.root)
            return self
        with self._host_network_claimed(host_network_wait) if node_network else nullcontext():
            return self._start(timeout, owner, node_network)

    def _start(self, timeout: float, owner: str, node_network: bool) -> Cluster:
        self._down()
        for sub in (self.layout.pki, self.layout.etcd_data, self.layout.kubeconfigs, self.layout.logs):
            shutil.rmtree(sub, ignore_errors=True)
            sub.mkdir(mode=0o700, parents=True)
        missing = [p for p in vars(self.binaries).values() if not p.exists()]
        if missing:
            raise FileNotFoundError(f"cluster binaries missing ({missing[0]}); run scripts/build-k8s.sh")
        host_network = network.HostNetwork(network.free_cidr(), SERVICE_CIDR) if node_network else None
        address = host_network.node_ip if host_network else HOST
        ports = Ports(*free_ports(5), address=address)
        handles: list[Handle] = []
        try:
            if host_network is not None:
                sysctls = network.setup(host_network)
                self._write_state(ports.server, owner, handles, network={
                    "pod_cidr": host_network.pod_cidr, "service_cidr": host_network.service_cidr, "sysctls": sysctls})
            self._write_identities(ports.server, address)
            for stage in control_plane(self.binaries, self.layout, ports):
                for spec in stage:
                    handles.append(process.start(spec))
                    self._write_state(ports.server, owner, handles)
                process.wait_gates(handles[-len(stage):], timeout)
            process.wait_healthy(handles, timeout)
        except BaseException:
            self._down()
            raise
        return self

    @contextmanager
    def _host_network_claimed(self, wait: float) -> Iterator[None]:
        """Hold the machine's node network for this cluster while it starts (released if the start fails).

        A claim whose cluster no longer runs is stale: that cluster is taken down first.
        """
        deadline = time.monotonic() + wait
        while True:
            with _flock(HOST_NETWORK_CLAIM.with_suffix(".lock"), fcntl.LOCK_EX):
                holder = _host_network_holder()
                if holder in (None, self.root) or not Cluster(holder).holds_host_network():
                    if holder not in (None, self.root):
                        logger.warning("taking down the stale cluster in %s that held the node network", holder)
                        Cluster(holder)._down()
                    HOST_NETWORK_CLAIM.write_text(json.dumps({"root": str(self.root)}))
                    try:
                        yield
                    except BaseException:
                        HOST_NETWORK_CLAIM.unlink(missing_ok=True)
                        raise
                    return
                other = Cluster(holder)
                busy = (f"the node network of this machine is held by the cluster in {holder} (started by "
                        f"{other.owner}); stop it with `python -m devcluster down` in that checkout")
            if other.owner != "pytest" or time.monotonic() >= deadline:
                raise HostNetworkBusy(busy)
            logger.warning("%s; waiting up to %.0f s", busy, deadline - time.monotonic())
            time.sleep(5)

    def down(self) -> None:
        """Stop the node and every recorded process (newest first), remove the host network; keep logs."""
        with _flock(HOST_NETWORK_CLAIM.with_suffix(".lock"), fcntl.LOCK_EX) if self.network else nullcontext():
            self._down()
            if self.network is None and _host_network_holder() == self.root:
                HOST_NETWORK_CLAIM.unlink(missing_ok=True)

    def _down(self) -> None:
        self.stop_node(locked=False)
        self._stop(self.handles())
        recorded = self._state().get("network")
        if recorded:
            network.teardown(network.HostNetwork(recorded["pod_cidr"], recorded["service_cidr"]), recorded.get("sysctls"))
        self.layout.state_file.unlink(missing_ok=True)

    def restart(self, name: str, down_seconds: float = 0.0, timeout: float = START_TIMEOUT) -> None:
        """Stop the control-plane process ``name`` (e.g. ``etcd``, ``kube-apiserver``), keep it down
        for ``down_seconds``, start it again with the same command line; return once it is healthy."""
        with self.locked():
            handles = self.handles()
            old = next((h for h in handles if h.name == name), None)
            if old is None or not old.argv:
                raise RuntimeError(f"no restartable process {name!r} in {self.root}")
            process.stop(old)
            time.sleep(down_seconds)
            new = process.start(old.spec())
            self._write_state(self._require_server(), self.owner or "cli",
                              [new if h is old else h for h in handles])
            process.wait_healthy([new], timeout)

    def _stop(self, handles: list[Handle]) -> None:
        for handle in reversed(handles):
            process.stop(handle)

    # -- the node -----------------------------------------------------------------------
    def start_node(self, name: str = DEFAULT_NODE, timeout: float = START_TIMEOUT) -> NodePlan:
        """Start (or reuse) the real node ``name``: containerd, the kubelet, kube-proxy, CoreDNS.

        Needs a cluster started with ``node_network``. The images are built (or taken from the
        cache) and loaded into the node's containerd first; returns once the Node is Ready.
        """
        from devcluster import images

        with self.locked():
            server = self._require_server()
            host_network = self.network
            if host_network is None:
                raise RuntimeError(f"the cluster in {self.root} has no node network; start it with `cluster up --node`")
            plan = self.node_plan
            handles = self.handles()
            node_handles = [h for h in handles if h.name.endswith(f"-{name}")]
            if plan is not None and len(node_handles) == 3 and all(process.healthy(h) for h in node_handles):
                node = NodeLayout.of(self.layout, name)
                images.load_images(images.ensure_images(), str(node.containerd_socket))  # a changed tree rebuilds
                return plan
            self.stop_node(name, locked=False)
            handles = self.handles()
            plan = NodePlan(name, host_network.pod_cidr, host_network.bridge, *free_ports(5))
            node = NodeLayout.of(self.layout, name)
            runtime.write_files(self, node, plan)
            self._write_state(server, self.owner or "cli", handles, node=asdict(plan))
            try:
                containerd, kubelet, proxy = runtime.specs(self, node, plan)
                handles.append(process.start(containerd))
                self._write_state(server, self.owner or "cli", handles)
                process.wait_healthy(handles[-1:], timeout)
                images.load_images(images.ensure_images(), str(node.containerd_socket))
                for spec in (kubelet, proxy):
                    handles.append(process.start(spec))
                    self._write_state(server, self.owner or "cli", handles)
                process.wait_healthy(handles[-2:], timeout)
                runtime.apply(self, [addons.kubelet_api_access(), *addons.coredns(images.COREDNS_IMAGE)])
                runtime.wait_ready(self, name)
            except BaseException:
                self.stop_node(name, locked=False)
                raise
            return plan

    def stop_node(self, name: str = DEFAULT_NODE, locked: bool = True) -> None:
        """Stop the node ``name``: every pod, container, mount, rule and process it made goes; so does its Node."""
        with self.locked() if locked else nullcontext():
            plan = self.node_plan
            handles = self.handles()
            node_handles = [h for h in handles if h.name.endswith(f"-{name}")]
            if plan is None and not node_handles:
                return
            node = NodeLayout.of(self.layout, name)
            if plan is not None:
                runtime.teardown(self, node, plan, node_handles)
            else:
                self._stop(node_handles)
            runtime.wipe(node)
            server = self.server
            if server is not None:
                self._write_state(server, self.owner or "cli", [h for h in handles if h not in node_handles], node=None)
                if any(process.healthy(h) for h in handles if h.name == "kube-apiserver"):
                    self._delete_node(name)

    def _delete_node(self, name: str) -> None:
        """Decommission the Node object; the pod garbage collector then removes pods bound to it."""
        from kubernetes import client

        with self.api_client() as api:
            try:
                client.CoreV1Api(api).delete_node(name)
            except client.ApiException as err:
                if err.status != 404:
                    raise

    # -- identities ----------------------------------------------------------------------
    def _write_identities(self, server: str, address: str) -> None:
        ca = pki.create_ca(self.layout.pki)
        pki.create_serving_cert(ca, self.layout.pki, HOST, address)
        pki.create_service_account_key(self.layout.pki)
        pki.create_client_cert(ca, self.layout.pki, KUBELET_CLIENT)
        front_proxy = pki.create_ca(self.layout.pki, "front-proxy-ca", stem="front-proxy-ca")
        pki.create_client_cert(front_proxy, self.layout.pki, FRONT_PROXY_CLIENT)
        user, groups = ADMIN
        self._user_kubeconfig(server, self.layout.admin_kubeconfig, user, groups)
        for component in COMPONENT_USERS:
            self._user_kubeconfig(server, self.layout.kubeconfig(component), component, ())

    def _user_kubeconfig(self, server: str, path: Path, user: str, groups: tuple[str, ...] | list[str]) -> Path:
        ca = pki.KeyPair(self.layout.pem("ca.crt"), self.layout.pem("ca.key"))
        pair = pki.create_client_cert(ca, self.layout.pki, user, groups)
        return write_kubeconfig(path, render_kubeconfig(server, ca.cert, cert=pair.cert, key=pair.key, user=user))

    def _require_server(self) -> str:
        server = self.server
        if server is None:
            raise RuntimeError(f"no cluster running in {self.root}; run `python -m devcluster up`")
        return server

    def kubeconfig_for_user(self, user: str, groups: list[str]) -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` by client certificate."""
        suffix = "+".join([user, *groups])
        return self._user_kubeconfig(self._require_server(), self.layout.kubeconfig(suffix), user, groups)

    def kubeconfig_for_service_account(self, namespace: str, name: str) -> Path:
        """A kubeconfig with a bound token of ServiceAccount ``namespace/name`` (created if missing)."""
        from kubernetes import client

        server = self._require_server()
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            try:
                core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata={"name": name}))
            except client.ApiException as err:
                if err.status != 409:
                    raise
            request = client.AuthenticationV1TokenRequest(spec={"audiences": [], "expirationSeconds": TOKEN_SECONDS})
            token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        user = f"system:serviceaccount:{namespace}:{name}"
        config = render_kubeconfig(server, self.layout.pem("ca.crt"), token=token, user=user)
        return write_kubeconfig(self.layout.kubeconfig(user), config)

    def api_client(self, kubeconfig: Path | None = None) -> ApiClient:
        """A ``kubernetes`` client for ``kubeconfig`` (default: the admin)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.admin_kubeconfig))


@contextmanager
def shared(root: Path, owner: str, keep: bool = False, node_network: bool = False) -> Iterator[Cluster]:
    """Use the cluster in ``root`` together with other processes (e.g. parallel pytest runs).

    Reuses a healthy cluster or starts one marked as ``owner``'s. On exit, the last user
    stops it, unless it was started by someone else (``python -m devcluster up``) or ``keep``.
    """
    cluster = Cluster(root)
    cluster.root.mkdir(parents=True, exist_ok=True)
    with (cluster.root / ".users").open("w") as users:
        with cluster.locked():
            fcntl.flock(users, fcntl.LOCK_SH)
            started = time.monotonic()
            reused = cluster.is_healthy()
            cluster.up(owner=owner, node_network=node_network)
            logger.info("control plane %s in %.1fs", "reused" if reused else "started", time.monotonic() - started)
        try:
            yield cluster
        finally:
            with cluster.locked():
                fcntl.flock(users, fcntl.LOCK_UN)
                if not keep and cluster.owner == owner and _try_exclusive(users):
                    cluster.down()


@contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, operation)
        yield


def _host_network_holder() -> Path | None:
    """The state directory of the cluster that claimed this machine's node network, if any."""
    try:
        return Path(json.loads(HOST_NETWORK_CLAIM.read_text())["root"])
    except (OSError, ValueError, KeyError):
        return None


def _try_exclusive(handle: IO[str]) -> bool:
    """True when no other process holds ``handle``'s file (we then hold it exclusively)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
