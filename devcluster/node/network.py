"""Pod networking for the process node: one bridge per node, one netns + veth pair per pod.

Owns the node's bridge (gateway = the first address of the pod CIDR, which is also the
node's InternalIP) and the network namespaces named ``<prefix><pod-uid>``; addresses are
handed out from the pod CIDR by ``AddressPool``. Everything goes through iproute2 (``ip``).
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
LOCK_DIR = Path("/run/modeldeploy-nodes")


class NetworkError(RuntimeError):
    """An ``ip`` command failed; the message holds the command and its stderr."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; raise ``NetworkError`` on failure unless ``check`` is false."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class NodeNetwork:
    """The node's address plan: pod CIDR, bridge name and namespace-name prefix."""

    cidr: ipaddress.IPv4Network
    bridge: str
    prefix: str

    @classmethod
    def for_cidr(cls, cidr: str) -> NodeNetwork:
        """Names derived from the CIDR, so two nodes with different CIDRs never collide."""
        network = ipaddress.IPv4Network(cidr)
        tag = format(int(network.network_address), "08x")[-6:]
        return cls(network, f"mdbr{tag}", f"md{tag}-")

    @property
    def gateway(self) -> str:
        return str(self.cidr.network_address + 1)

    def netns(self, pod_uid: str) -> str:
        return f"{self.prefix}{pod_uid.replace('-', '')[:12]}"

    def host_veth(self, pod_uid: str) -> str:
        return f"v{self.prefix[2:]}{pod_uid.replace('-', '')[:8]}"[:15]


class AddressPool:
    """Thread-safe allocation of pod addresses (gateway and broadcast excluded)."""

    def __init__(self, cidr: ipaddress.IPv4Network) -> None:
        self._free = [str(a) for a in list(cidr.hosts())[1:]]
        self._lock = threading.Lock()

    def allocate(self) -> str:
        with self._lock:
            if not self._free:
                raise NetworkError("pod CIDR exhausted")
            return self._free.pop(0)

    def release(self, address: str) -> None:
        with self._lock:
            if address not in self._free:
                self._free.append(address)


def claim(net: NodeNetwork) -> IO[str]:
    """Hold the CIDR's lock for the agent's lifetime; raise ``NetworkError`` if another agent holds it."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    handle = (LOCK_DIR / f"{net.bridge}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise NetworkError(f"pod CIDR {net.cidr} is in use by another node agent on this machine") from None
    return handle


def free_cidr(base: str = "10.244.0.0/16", prefixlen: int = 24) -> str:
    """The first ``/prefixlen`` of ``base`` that no running agent holds and no bridge uses."""
    links = set(ip("-o", "link", "show").replace(":", " ").split())
    for subnet in ipaddress.IPv4Network(base).subnets(new_prefix=prefixlen):
        net = NodeNetwork.for_cidr(str(subnet))
        if net.bridge in links:
            continue
        try:
            claim(net).close()
        except NetworkError:
            continue
        return str(subnet)
    raise NetworkError(f"every /{prefixlen} of {base} is in use by a node")


def setup_bridge(net: NodeNetwork) -> None:
    """(Re)create the node bridge with the gateway address; removes leftovers of a crashed agent.

    Call only while holding ``claim(net)``: the leftovers are then nobody else's.
    """
    teardown_node(net)
    ip("link", "add", net.bridge, "type", "bridge")
    ip("addr", "add", f"{net.gateway}/{net.cidr.prefixlen}", "dev", net.bridge)
    ip("link", "set", net.bridge, "up")


def teardown_node(net: NodeNetwork) -> None:
    """Delete every pod namespace with the node's prefix, then the bridge."""
    for name in ip("netns", "list", check=False).split():
        if name.startswith(net.prefix):
            ip("netns", "delete", name, check=False)
    ip("link", "delete", net.bridge, check=False)


def setup_pod(net: NodeNetwork, pod_uid: str, address: str) -> str:
    """Create the pod's namespace with ``eth0`` = ``address`` on the bridge; return the netns name."""
    ns, host, peer = net.netns(pod_uid), net.host_veth(pod_uid), f"p{net.host_veth(pod_uid)[1:]}"
    teardown_pod(net, pod_uid)
    ip("netns", "add", ns)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", ns)
        ip("link", "set", host, "master", net.bridge, "up")
        ip("-n", ns, "link", "set", peer, "name", "eth0")
        ip("-n", ns, "addr", "add", f"{address}/{net.cidr.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", net.gateway)
    except NetworkError:
        teardown_pod(net, pod_uid)
        raise
    return ns


def teardown_pod(net: NodeNetwork, pod_uid: str) -> None:
    """Delete the pod's namespace (its veth pair goes with it)."""
    ip("netns", "delete", net.netns(pod_uid), check=False)
    ip("link", "delete", net.host_veth(pod_uid), check=False)
