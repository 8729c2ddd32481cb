"""Bring the real node up on a running control plane, and take it down leaving nothing behind.

Up: write the configuration files (``devcluster.node.config``), start containerd, load the
images (``devcluster.images``), start the kubelet and kube-proxy, apply the add-ons
(``devcluster.node.addons``), wait for the Node to be Ready. Down: stop the kubelet, stop and
remove every pod sandbox through the CRI (``crictl rmp``: containers killed, CNI DEL, volumes
unmounted), stop kube-proxy and remove its iptables rules (``kube-proxy --cleanup``), stop
containerd, unmount whatever is still mounted under the node's directory and remove the
kubelet's cgroups. The host network (bridge, routes, guard chain) belongs to the cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from devcluster import pki, process
from devcluster.components import ProcessSpec
from devcluster.node import config, network
from devcluster.node.config import NodeLayout, NodePlan
from devcluster.process import Handle

if TYPE_CHECKING:
    from devcluster.cluster import Cluster

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
CGROUP_ROOT = Path("/sys/fs/cgroup")


def write_files(cluster: Cluster, node: NodeLayout, plan: NodePlan) -> None:
    """Every file the node's processes read: configs, certificates, kubeconfigs."""
    for directory in (node.root, node.containerd_config.parent, node.cni_conf_dir, node.cni_ipam_dir,
                      node.kubelet_root, node.pod_logs):
        directory.mkdir(parents=True, exist_ok=True)
    node.containerd_config.write_text(config.containerd_config(node, plan))
    for stale in node.cni_conf_dir.iterdir():
        stale.unlink()
    (node.cni_conf_dir / f"10-{config.CNI_NETWORK}.conflist").write_text(json.dumps(config.cni_network(node, plan), indent=2))
    node.resolv_conf.write_text("# cluster DNS only: no upstream resolver\n")
    ca = pki.KeyPair(cluster.layout.pem("ca.crt"), cluster.layout.pem("ca.key"))
    pki.create_server_cert(ca, pki.KeyPair(node.serving_cert, node.serving_key), f"system:node:{plan.name}",
                           [plan.node_ip], (plan.name,))
    node.kubelet_config.write_text(yaml.safe_dump(config.kubelet_config(node, plan, ca.cert)))
    proxy_kubeconfig = cluster.kubeconfig_for_user("system:kube-proxy", [])
    node.proxy_config.write_text(yaml.safe_dump(config.kube_proxy_config(plan, proxy_kubeconfig)))


def specs(cluster: Cluster, node: NodeLayout, plan: NodePlan) -> list[ProcessSpec]:
    """containerd, the kubelet (as ``system:node:NAME``) and kube-proxy, in start order."""
    kubelet_kubeconfig = cluster.kubeconfig_for_user(f"system:node:{plan.name}", ["system:nodes"])
    logs = cluster.layout.logs
    return [
        config.containerd_spec(node, plan, logs),
        config.kubelet_spec(cluster.binaries, node, plan, kubelet_kubeconfig, logs),
        config.kube_proxy_spec(cluster.binaries, node, plan, logs),
    ]


def apply(cluster: Cluster, manifests: list[dict[str, object]]) -> None:
    """Server-side apply ``manifests`` as the admin."""
    documents = yaml.safe_dump_all(manifests, sort_keys=False)
    cluster.kubectl_run("apply", "--server-side", "--force-conflicts", "--field-manager=devcluster", "-f", "-",
                        stdin=documents)


def crictl(cluster: Cluster, node: NodeLayout, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``crictl`` against this node's containerd."""
    endpoint = f"unix://{node.containerd_socket}"
    return subprocess.run([str(cluster.binaries.crictl), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
                           "--timeout", "60s", *args], capture_output=True, text=True, timeout=timeout)


def wait_ready(cluster: Cluster, name: str, timeout: float = READY_TIMEOUT) -> None:
    """Block until Node ``name`` reports Ready; raise with its conditions otherwise."""
    from kubernetes import client

    deadline = time.monotonic() + timeout
    conditions: list[tuple[str, str, str]] = []
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        while time.monotonic() < deadline:
            try:
                found = core.read_node(name)
            except client.ApiException as err:
                if err.status != 404:
                    raise
            else:
                conditions = [(c.type, c.status, c.message) for c in found.status.conditions or []]
                if any(t == "Ready" and s == "True" for t, s, _ in conditions):
                    return
            time.sleep(0.5)
    raise process.ComponentError(f"kubelet-{name}", f"Node not Ready after {timeout:.0f}s: {conditions}",
                                 cluster.layout.logs / f"kubelet-{name}.log")


def teardown(cluster: Cluster, node: NodeLayout, plan: NodePlan, handles: list[Handle]) -> None:
    """Stop the node's processes and remove every pod, rule, mount and cgroup they made."""
    by_name = {h.name.removesuffix(f"-{plan.name}"): h for h in handles}
    if kubelet := by_name.get("kubelet"):
        process.stop(kubelet)
    if (containerd := by_name.get("containerd")) and process.alive(containerd):
        removed = crictl(cluster, node, "rmp", "--force", "--all")
        if removed.returncode != 0:
            logger.warning("crictl rmp: %s", removed.stderr.strip())
    if proxy := by_name.get("kube-proxy"):
        process.stop(proxy)
    subprocess.run([str(cluster.binaries.kube_proxy), "--cleanup"], capture_output=True, timeout=60)
    network.remove_kubelet_chains()
    if containerd:
        process.stop(containerd)
    kill_leftover_shims(node)
    unmount_below(node.root)
    remove_kubepods_cgroups()


def shim_pids(node: NodeLayout) -> list[int]:
    """The runc shims serving this node's containerd (each one holds its containers)."""
    address = str(node.containerd_socket).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address in argv:
            found.append(int(proc.name))
    return found


def kill_leftover_shims(node: NodeLayout) -> None:
    """SIGKILL the shims still running after containerd stopped, with their process groups (the containers)."""
    for pid in shim_pids(node):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (``/proc/self/mountinfo``, octal escapes decoded)."""
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_below(root: Path) -> None:
    """Unmount everything mounted under ``root`` (lazily where a mount is busy)."""
    for point in mounts_below(root) if root.exists() else []:
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def remove_kubepods_cgroups() -> None:
    """Remove the kubelet's ``kubepods`` cgroup trees (children first) once their processes are gone."""
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.exists() else []:
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir(directory)
        _rmdir(top)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as err:
        logger.debug("cgroup %s stays: %s", path, err)


def wipe(node: NodeLayout) -> None:
    """Forget the node's pods and network allocations but keep containerd's image store."""
    for directory in (node.kubelet_root, node.cni_ipam_dir, node.containerd_state, node.pod_logs, node.runc_root):
        shutil.rmtree(directory, ignore_errors=True)


