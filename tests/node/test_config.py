"""The node's configuration, rendered without a machine: every path under the node's directory,
the settings this machine needs, and networking that keeps the cluster's ranges on the bridge."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from devcluster.node import addons, config, network
from devcluster.node.config import NodeLayout, NodePlan

PLAN = NodePlan("devnode", "10.244.3.0/24", network.bridge_name("10.244.3.0/24"), 10250, 10248, 10256, 10249, 10257)


@pytest.fixture
def node(tmp_path: Path) -> NodeLayout:
    return NodeLayout(tmp_path / "nodes" / "devnode")


def test_containerd_keeps_every_path_under_the_node_and_clamps_oom_scores(node: NodeLayout) -> None:
    parsed = tomllib.loads(config.containerd_config(node, PLAN))
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    paths = [parsed["root"], parsed["state"], parsed["grpc"]["address"], parsed["ttrpc"]["address"],
             parsed["plugins"]["io.containerd.internal.v1.opt"]["path"], cri["cni"]["conf_dir"],
             cri["containerd"]["runtimes"]["runc"]["options"]["Root"]]
    assert all(path.startswith(str(node.root) + "/") for path in paths), paths
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == config.PAUSE_IMAGE
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_cni_network_is_a_bridge_with_no_masquerade_to_the_outside(node: NodeLayout) -> None:
    bridge, portmap = config.cni_network(node, PLAN)["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["ipMasq"], bridge["isGateway"]) == ("bridge", PLAN.bridge, False, True)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24", "gateway": "10.244.3.1"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "10.0.0.0/24"}], "Services only: a pod has no default route"
    assert bridge["ipam"]["dataDir"].startswith(str(node.root))
    assert portmap["type"] == "portmap"


def test_kubelet_runs_on_cgroup_v1_with_cluster_dns_only(node: NodeLayout, tmp_path: Path) -> None:
    kubelet = config.kubelet_config(node, PLAN, tmp_path / "ca.crt")
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["address"] == PLAN.node_ip == "10.244.3.1"
    assert kubelet["clusterDNS"] == [config.cluster_dns_ip()] == ["10.0.0.10"]
    assert kubelet["resolvConf"] == str(node.resolv_conf)
    assert kubelet["authorization"]["mode"] == "Webhook" and kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{node.containerd_socket}"
    assert kubelet["imageGCHighThresholdPercent"] == 100, "preloaded images must never be garbage-collected"


def test_kube_proxy_serves_node_ports_only_on_the_node_address(tmp_path: Path) -> None:
    proxy = config.kube_proxy_config(PLAN, tmp_path / "kubeconfig")
    assert proxy["mode"] == "iptables" and proxy["nodePortAddresses"] == ["10.244.3.1/32"]
    assert proxy["conntrack"]["maxPerCore"] == 0, "kube-proxy leaves the machine's conntrack sysctls alone"
    assert proxy["healthzBindAddress"].startswith("127.0.0.1:")


def test_guard_rules_keep_pod_and_service_ranges_on_the_bridge() -> None:
    net = network.HostNetwork("10.244.3.0/24", "10.0.0.0/24")
    rules = [" ".join(rule) for rule in net.guard_rules()]
    for cidr in ("10.244.3.0/24", "10.0.0.0/24"):
        assert any(f"-s {cidr} ! -o {net.bridge}" in r and r.endswith("-j DROP") for r in rules)
        assert any(f"-d {cidr} ! -o {net.bridge}" in r and r.endswith("-j DROP") for r in rules)
    assert len(net.bridge) <= 15 and net.node_ip == "10.244.3.1"
    assert network.bridge_name("10.244.3.0/24") != network.bridge_name("10.244.4.0/24")


def test_coredns_forwards_nothing_and_sits_behind_the_kubelets_cluster_dns() -> None:
    objects = {o["kind"]: o for o in addons.coredns("registry.k8s.io/coredns/coredns:v1")}
    corefile = objects["ConfigMap"]["data"]["Corefile"]
    assert "forward" not in corefile and "kubernetes cluster.local" in corefile
    assert objects["Service"]["spec"]["clusterIP"] == config.cluster_dns_ip()
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, "listens on 1053: no NET_BIND_SERVICE"


def test_mount_points_below_a_directory_are_listed_deepest_first(tmp_path: Path) -> None:
    from devcluster.node import runtime

    assert runtime.mounts_below(tmp_path) == []
    assert runtime.mounts_below(Path("/proc"))[-1] == "/proc"


def test_chain_removal_deletes_only_the_jumps_into_those_chains() -> None:
    rules = "\n".join([
        "-P INPUT ACCEPT", "-N KUBE-FIREWALL", "-A INPUT -j KUBE-FIREWALL", "-A OUTPUT -j KUBE-FIREWALL",
        "-A INPUT -s 10.1.0.0/16 -j ACCEPT",
        '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block" -j DROP',
    ])
    assert network.jumps_to(rules, ("KUBE-FIREWALL",)) == [["-D", "INPUT", "-j", "KUBE-FIREWALL"],
                                                           ["-D", "OUTPUT", "-j", "KUBE-FIREWALL"]]
