"""The node agent: registers a Node, keeps its Lease fresh, and runs the pods bound to it.

Talks to the API server only, with the node's own identity (``system:node:<name>`` in
``system:nodes``, so the Node authorizer and NodeRestriction apply as to a kubelet): creates
the Node and its status, renews ``kube-node-lease/<name>``, list-watches pods with
``spec.nodeName=<name>`` and hands each UID to a ``PodWorker``. ``stop()`` kills every
container, removes every namespace, directory and mount point it created, and reports the
Node NotReady (a node may not delete its own Node object; ``Cluster.stop_node`` does, as admin).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from devcluster.node import network
from devcluster.node.pod import NodeContext, PodWorker, now_iso
from devcluster.node.spec import Image, Pod, venv_bin

logger = logging.getLogger(__name__)

LEASE_SECONDS = 40
RENEW_SECONDS = 10
STATUS_SECONDS = 60
WATCH_SECONDS = 60
CAPACITY = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
KUBELET_VERSION = "v1.34.4"


def micro_time() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_object(name: str, pod_cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "modeldeploy.io/process-node": "true"}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    }


def node_status(address: str, ready: bool, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Node's status: capacity, addresses, info and the kubelet's five conditions."""
    now = now_iso()
    old = {c["type"]: c for c in (previous or {}).get("conditions") or []}

    def cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        status = "True" if ok else "False"
        since = old[type_]["lastTransitionTime"] if type_ in old and old[type_]["status"] == status else now
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since}

    return {
        "capacity": CAPACITY, "allocatable": CAPACITY,
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": os.uname().nodename}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
            "osImage": "modeldeploy process node", "containerRuntimeVersion": f"process://{venv_bin().parent}",
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": "amd64",
        },
        "conditions": [
            cond("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", ready, "KubeletReady" if ready else "KubeletNotReady",
                 "process node is posting ready status" if ready else "process node is stopping"),
        ],
    }


class Agent:
    """One process node: ``start()`` registers and begins serving pods, ``stop()`` undoes it all."""

    def __init__(self, api: client.ApiClient, name: str, pod_cidr: str, root: Path, images: dict[str, Image],
                 backoff_base: float) -> None:
        self.api, self.name, self.pod_cidr = api, name, pod_cidr
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        net = network.NodeNetwork.for_cidr(pod_cidr)
        self.ctx = NodeContext(self.core, name, net, network.AddressPool(net.cidr), images, root / "pods",
                               backoff_base)
        self.root = root
        self.workers: dict[str, PodWorker] = {}
        self.stopped = threading.Event()
        self.watching = threading.Event()
        self.threads: list[threading.Thread] = []
        self.lock: IO[str] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.lock = network.claim(self.ctx.net)
        shutil.rmtree(self.ctx.root, ignore_errors=True)
        self.ctx.root.mkdir(parents=True)
        network.setup_bridge(self.ctx.net)
        self.register()
        for target in (self.heartbeat, self.watch_pods):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self.threads.append(thread)

    def healthy(self) -> bool:
        return self.watching.is_set() and not self.stopped.is_set()

    def stop(self) -> None:
        self.stopped.set()
        for worker in list(self.workers.values()):
            worker.shutdown()
        for worker in list(self.workers.values()):
            worker.join(timeout=30)
        for path in sorted(self.ctx.placeholders, key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
            except OSError as err:
                logger.info("left mount point %s: %s", path, err)
        if self.lock is None:
            return  # never claimed the CIDR: the namespaces and bridge belong to another agent
        network.teardown_node(self.ctx.net)
        self.lock.close()
        shutil.rmtree(self.ctx.root, ignore_errors=True)
        try:
            current = self.api.sanitize_for_serialization(self.core.read_node(self.name))
            self.core.patch_node_status(self.name, {"status": node_status(self.ctx.net.gateway, False,
                                                                          current.get("status"))})
        except ApiException as err:
            logger.info("final node status not written: %s %s", err.status, err.reason)
        logger.info("node %s stopped, its pods' processes and namespaces removed", self.name)

    # -- node and lease ----------------------------------------------------------------------
    def register(self) -> None:
        try:
            self.core.create_node(node_object(self.name, self.pod_cidr))
        except ApiException as err:
            if err.status != 409:
                raise
        self.post_status()
        self.renew_lease()
        logger.info("node %s registered (pods from %s, gateway %s)", self.name, self.pod_cidr, self.ctx.net.gateway)

    def post_status(self) -> None:
        current = self.api.sanitize_for_serialization(self.core.read_node(self.name))
        status = node_status(self.ctx.net.gateway, True, current.get("status"))
        self.core.patch_node_status(self.name, {"status": status})

    def renew_lease(self) -> None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": micro_time()}}
        try:
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": body["spec"]})
        except ApiException as err:
            if err.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.stopped.wait(RENEW_SECONDS):
            try:
                self.renew_lease()
                if time.monotonic() - last_status >= STATUS_SECONDS:
                    self.post_status()
                    last_status = time.monotonic()
            except Exception:
                logger.exception("heartbeat failed")

    # -- pods --------------------------------------------------------------------------------
    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self.stopped.is_set():
            try:
                listed = self.core.list_pod_for_all_namespaces(field_selector=selector)
                seen = {p.metadata.uid for p in listed.items}
                for pod in listed.items:
                    self.dispatch("ADDED", self.api.sanitize_for_serialization(pod))
                for uid in set(self.workers) - seen:
                    self.workers[uid].vanish()
                self.watching.set()
                stream = watch.Watch()
                for event in stream.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                           resource_version=listed.metadata.resource_version,
                                           timeout_seconds=WATCH_SECONDS):
                    if self.stopped.is_set():
                        stream.stop()
                        break
                    self.dispatch(event["type"], self.api.sanitize_for_serialization(event["object"]))
            except ApiException as err:
                if err.status != 410:
                    logger.warning("pod watch: %s %s", err.status, err.reason)
                    self.stopped.wait(1.0)
            except Exception:
                logger.exception("pod watch failed")
                self.stopped.wait(1.0)

    def dispatch(self, kind: str, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.vanish()
                self.workers.pop(uid, None)
            return
        if kind not in ("ADDED", "MODIFIED"):
            return
        if worker is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and \
                    not pod["metadata"].get("deletionTimestamp"):
                return
            worker = PodWorker(self.ctx, pod)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)
        self.workers = {u: w for u, w in self.workers.items() if w.is_alive() or u == uid}


def serve_health(agent: Agent, port: int) -> ThreadingHTTPServer:
    """``GET /healthz`` on loopback: 200 once the node is registered and watching pods."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            ok = self.path == "/healthz" and agent.healthy()
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ok else b"not ready")

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    return server
