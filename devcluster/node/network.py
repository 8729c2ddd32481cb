"""The node's host networking: its bridge, the routes to it and the guard rules, made and removed.

Owns the bridge ``mdbr<tag>`` whose address (the pod CIDR's first) is the node's InternalIP
and the API server's address, the route that sends the Service range to that bridge, and one
iptables chain that drops anything from the pod or Service ranges that would leave through
another interface. So no packet for the cluster's ranges can take the default route, even
while kube-proxy has not written a rule yet. Pod interfaces are the CNI bridge plugin's.
"""

from __future__ import annotations

import ipaddress
import logging
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
# The chains the kubelet itself keeps (``kube-proxy --cleanup`` removes only kube-proxy's).
KUBELET_CHAINS = {"filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"), "nat": ("KUBE-KUBELET-CANARY",),
                  "mangle": ("KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")}
IPTABLES = ("iptables", "ip6tables")


class NetworkError(RuntimeError):
    """A host networking command failed; the message holds the command and its stderr."""


def run(*argv: str, check: bool = True) -> str:
    """Run ``argv``; raise ``NetworkError`` on failure unless ``check`` is false."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def bridge_name(pod_cidr: str) -> str:
    """A bridge name derived from the CIDR (fits the 15-character limit), so nodes never collide."""
    tag = format(int(ipaddress.IPv4Network(pod_cidr).network_address), "08x")[-6:]
    return f"mdbr{tag}"


def free_cidr(base: str = "10.244.0.0/16", prefixlen: int = 24) -> str:
    """The first ``/prefixlen`` of ``base`` whose bridge does not exist on this machine."""
    links = set(run("ip", "-o", "link", "show").replace(":", " ").split())
    for subnet in ipaddress.IPv4Network(base).subnets(new_prefix=prefixlen):
        if bridge_name(str(subnet)) not in links:
            return str(subnet)
    raise NetworkError(f"every /{prefixlen} of {base} has a bridge on this machine")


@dataclass(frozen=True)
class HostNetwork:
    """The bridge, routes and guard chain of one node."""

    pod_cidr: str
    service_cidr: str

    @property
    def bridge(self) -> str:
        return bridge_name(self.pod_cidr)

    @property
    def node_ip(self) -> str:
        return str(ipaddress.IPv4Network(self.pod_cidr).network_address + 1)

    @property
    def chain(self) -> str:
        return f"MODELDEPLOY-{self.bridge.upper()}"

    def guard_rules(self) -> list[list[str]]:
        """The guard chain's rules: cluster ranges may only leave through the bridge (or stay on this host)."""
        comment = ["-m", "comment", "--comment", f"modeldeploy devcluster {self.bridge}"]
        rules = [["-o", "lo", *comment, "-j", "RETURN"]]  # to the node's own address (the API server)
        for cidr in (self.pod_cidr, self.service_cidr):
            rules.append(["-s", cidr, "!", "-o", self.bridge, *comment, "-j", "DROP"])
            rules.append(["-d", cidr, "!", "-o", self.bridge, *comment, "-j", "DROP"])
        return rules


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def setup(net: HostNetwork) -> dict[str, str]:
    """Make the bridge, route and guard chain; return the sysctl values found before, to restore."""
    teardown(net)
    previous = {}
    for key, value in SYSCTLS.items():
        path = sysctl_path(key)
        previous[key] = path.read_text().strip()
        path.write_text(value)
    run("ip", "link", "add", net.bridge, "type", "bridge")
    run("ip", "addr", "add", f"{net.node_ip}/{ipaddress.IPv4Network(net.pod_cidr).prefixlen}", "dev", net.bridge)
    run("ip", "link", "set", net.bridge, "up")
    taken = run("ip", "route", "show", net.service_cidr).strip()
    if taken:
        raise NetworkError(f"the Service range {net.service_cidr} is already routed on this machine ({taken}); "
                           "another cluster or network uses it")
    run("ip", "route", "add", net.service_cidr, "dev", net.bridge, "src", net.node_ip)
    run("iptables", "-w", "-N", net.chain)
    for rule in net.guard_rules():
        run("iptables", "-w", "-A", net.chain, *rule)
    for hook in ("FORWARD", "OUTPUT"):
        run("iptables", "-w", "-I", hook, "1", "-j", net.chain)
    return previous


def jumps_to(rules: str, chains: tuple[str, ...]) -> list[list[str]]:
    """The ``-D`` arguments that delete every rule of ``iptables -S`` output jumping to ``chains``."""
    deletions = []
    for line in rules.splitlines():
        words = shlex.split(line)
        if words[:1] == ["-A"] and len(words) > 2 and words[1] not in chains and words[-2:-1] == ["-j"] \
                and words[-1] in chains:
            deletions.append(["-D", *words[1:]])
    return deletions


def remove_chains(binary: str, table: str, chains: tuple[str, ...]) -> None:
    """Delete the rules jumping to ``chains`` in ``table``, then flush and delete the chains (absent ones are fine)."""
    for deletion in jumps_to(run(binary, "-w", "-t", table, "-S", check=False), chains):
        run(binary, "-w", "-t", table, *deletion, check=False)
    for chain in chains:
        run(binary, "-w", "-t", table, "-F", chain, check=False)
        run(binary, "-w", "-t", table, "-X", chain, check=False)


def remove_kubelet_chains() -> None:
    """Remove the kubelet's own iptables chains (``KUBE-FIREWALL``, the canaries) for IPv4 and IPv6."""
    for binary in IPTABLES:
        for table, chains in KUBELET_CHAINS.items():
            remove_chains(binary, table, chains)


def teardown(net: HostNetwork, previous_sysctls: dict[str, str] | None = None) -> None:
    """Remove what ``setup`` made (missing pieces are fine); restore the sysctls it changed."""
    remove_chains("iptables", "filter", (net.chain,))
    run("ip", "link", "delete", net.bridge, check=False)  # its address and the Service route go with it
    for key, value in (previous_sysctls or {}).items():
        try:
            sysctl_path(key).write_text(value)
        except OSError as err:
            logger.warning("could not restore %s=%s: %s", key, value, err)


def leftovers(net: HostNetwork) -> list[str]:
    """What of ``net`` still exists on the machine (empty after ``teardown``), for tests and status."""
    found = []
    if net.bridge in run("ip", "-o", "link", "show", check=False):
        found.append(f"bridge {net.bridge}")
    if net.service_cidr in run("ip", "route", "show", check=False):
        found.append(f"route {net.service_cidr}")
    for binary in IPTABLES:
        for table in ("filter", "nat", "mangle"):
            for line in run(binary, "-w", "-t", table, "-S", check=False).splitlines():
                words = line.split()
                if words[:1] == ["-N"] and (words[1].startswith(("KUBE-", "CNI-")) or words[1] == net.chain):
                    found.append(f"{binary} {table} chain {words[1]}")
    return found
