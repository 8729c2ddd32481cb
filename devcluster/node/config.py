"""What the real node's processes are: their configuration files and command lines.

Pure: builds containerd's TOML, the CNI network list, the kubelet's and kube-proxy's
configuration objects and their ``ProcessSpec`` values from a ``NodeLayout`` and a
``NodePlan``. Writing the files and starting the processes is ``devcluster.node.runtime``'s
job; host networking is ``devcluster.node.network``'s.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.build import Binaries
from devcluster.components import HOST, SERVICE_CIDR, Layout, Probe, ProcessSpec

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "modeldeploy"


def cluster_dns_ip(service_cidr: str = SERVICE_CIDR) -> str:
    """The ``kube-dns`` Service's ClusterIP: the tenth address of the Service range, as kubeadm picks it."""
    return str(ipaddress.IPv4Network(service_cidr).network_address + 10)


@dataclass(frozen=True)
class NodePlan:
    """One node's names, addresses and loopback ports."""

    name: str
    pod_cidr: str
    bridge: str
    kubelet_port: int
    kubelet_healthz_port: int
    proxy_healthz_port: int
    proxy_metrics_port: int
    containerd_metrics_port: int

    @property
    def node_ip(self) -> str:
        """The bridge's address: the pods' gateway, the node's InternalIP, the API server's address."""
        return str(ipaddress.IPv4Network(self.pod_cidr).network_address + 1)


@dataclass(frozen=True)
class NodeLayout:
    """The files of one node under the cluster's state directory (never the machine's defaults)."""

    root: Path

    @classmethod
    def of(cls, layout: Layout, name: str) -> NodeLayout:
        return cls(layout.root / "nodes" / name)

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def serving_cert(self) -> Path:
        return self.root / "kubelet.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "kubelet.key"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml(tables: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    """A TOML document of top-level keys and flat tables (enough for containerd's config)."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]", *(f"  {key} = {_toml_value(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def containerd_config(node: NodeLayout, plan: NodePlan, pause_image: str = PAUSE_IMAGE) -> str:
    """containerd 1.6 (config version 2) with the CRI plugin, every path under ``node.root``.

    ``restrict_oom_score_adj``: the sandbox has no CAP_SYS_RESOURCE, so a negative OOM score
    adjustment (what the kubelet asks for some pods) must be clamped instead of failing.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    top = {
        "version": 2,
        "root": str(node.containerd_root),
        "state": str(node.containerd_state),
        "disabled_plugins": [
            "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
            "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
        ],
    }
    tables: dict[str, dict[str, Any]] = {
        "grpc": {"address": str(node.containerd_socket)},
        "ttrpc": {"address": f"{node.containerd_socket}.ttrpc"},
        "metrics": {"address": f"{HOST}:{plan.containerd_metrics_port}"},
        'plugins."io.containerd.internal.v1.opt"': {"path": str(node.root / "containerd" / "opt")},
        cri: {
            "sandbox_image": pause_image,
            "restrict_oom_score_adj": True,
            "netns_mounts_under_state_dir": True,
            "stream_server_address": HOST,
            "enable_selinux": False,
        },
        f"{cri}.containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
        f"{cri}.containerd.runtimes.runc": {"runtime_type": "io.containerd.runc.v2"},
        f"{cri}.containerd.runtimes.runc.options": {"SystemdCgroup": False, "Root": str(node.runc_root)},
        f"{cri}.cni": {"bin_dir": str(CNI_BIN_DIR), "conf_dir": str(node.cni_conf_dir), "max_conf_num": 1},
    }
    return toml(tables, top)


def cni_network(node: NodeLayout, plan: NodePlan) -> dict[str, Any]:
    """bridge + host-local (+ portmap): pods on the node's bridge, routes to Services only, no masquerade."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": plan.bridge,
                "isGateway": True,
                "ipMasq": False,  # pods never reach past the machine: nothing is NATed out
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": plan.pod_cidr, "gateway": plan.node_ip}]],
                    # Only the Service range goes through the gateway: a pod has no default route.
                    "routes": [{"dst": SERVICE_CIDR}],
                    "dataDir": str(node.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: NodeLayout, plan: NodePlan, client_ca: Path) -> dict[str, Any]:
    """KubeletConfiguration: containerd's socket, cgroupfs on cgroup v1, x509 + webhook auth."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": plan.node_ip,
        "port": plan.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": HOST,
        "healthzPort": plan.kubelet_healthz_port,
        "tlsCertFile": str(node.serving_cert),
        "tlsPrivateKeyFile": str(node.serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "imageServiceEndpoint": f"unix://{node.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # this machine has cgroup v1
        "failSwapOn": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [cluster_dns_ip()],
        "resolvConf": str(node.resolv_conf),  # no upstream resolver: the cluster queries nothing outside
        "podLogsDir": str(node.pod_logs),
        "serializeImagePulls": False,
        # Preloaded images cannot be pulled again: never garbage-collect them, evict only when nearly full.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(plan: NodePlan, kubeconfig: Path) -> dict[str, Any]:
    """KubeProxyConfiguration: iptables mode, NodePorts only on the node's address, sysctls left alone."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": plan.name,
        "mode": "iptables",
        "clusterCIDR": plan.pod_cidr,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{plan.node_ip}/32"],
        "healthzBindAddress": f"{HOST}:{plan.proxy_healthz_port}",
        "metricsBindAddress": f"{HOST}:{plan.proxy_metrics_port}",
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
    }


def containerd_spec(node: NodeLayout, plan: NodePlan, log_dir: Path) -> ProcessSpec:
    return ProcessSpec(
        f"containerd-{plan.name}", ("containerd", f"--config={node.containerd_config}"),
        log_dir / f"containerd-{plan.name}.log",
        Probe(f"http://{HOST}:{plan.containerd_metrics_port}/v1/metrics"),
    )


def kubelet_spec(bins: Binaries, node: NodeLayout, plan: NodePlan, kubeconfig: Path, log_dir: Path) -> ProcessSpec:
    argv = (
        str(bins.kubelet),
        f"--config={node.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={node.kubelet_root}",
        f"--cert-dir={node.root / 'kubelet-pki'}",
        f"--hostname-override={plan.name}",
        f"--node-ip={plan.node_ip}",
        "--node-labels=modeldeploy.io/devcluster-node=true",
        "--v=1",
    )
    return ProcessSpec(f"kubelet-{plan.name}", argv, log_dir / f"kubelet-{plan.name}.log",
                       Probe(f"http://{HOST}:{plan.kubelet_healthz_port}/healthz"))


def kube_proxy_spec(bins: Binaries, node: NodeLayout, plan: NodePlan, log_dir: Path) -> ProcessSpec:
    argv = (str(bins.kube_proxy), f"--config={node.proxy_config}", "--v=1")
    return ProcessSpec(f"kube-proxy-{plan.name}", argv, log_dir / f"kube-proxy-{plan.name}.log",
                       Probe(f"http://{HOST}:{plan.proxy_healthz_port}/healthz"))
