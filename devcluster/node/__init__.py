"""The real node of the local cluster: containerd + runc + CNI, the kubelet, kube-proxy and CoreDNS.

``config`` renders what each process reads (pure), ``network`` makes and removes the host's
bridge, routes and guard rules, ``addons`` holds the CoreDNS and RBAC manifests (pure), and
``runtime`` starts and tears down the processes. ``Cluster.start_node``/``stop_node`` sequence them.
"""

from devcluster.node.config import NodeLayout, NodePlan, cluster_dns_ip
from devcluster.node.network import HostNetwork, NetworkError

__all__ = ["HostNetwork", "NetworkError", "NodeLayout", "NodePlan", "cluster_dns_ip"]
