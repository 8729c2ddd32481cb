"""The cluster add-ons a real node needs, as manifests: CoreDNS and the API server's kubelet access.

Pure: returns Kubernetes objects. CoreDNS answers ``*.svc.cluster.local`` (and reverse lookups
of the cluster's ranges) from the API and forwards nothing: it has no ``forward`` plugin, so
the machine's resolver is never asked. It listens on 1053 as a non-root user; the ``kube-dns``
Service maps port 53 to it, so it needs no capability.
"""

from __future__ import annotations

from typing import Any

from devcluster.node.config import CLUSTER_DOMAIN, cluster_dns_ip

Manifest = dict[str, Any]
DNS_PORT = 1053
KUBELET_CLIENT = "kube-apiserver-kubelet-client"

COREFILE = f"""\
.:{DNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loop
    loadbalance
}}
"""


def kubelet_api_access() -> Manifest:
    """Lets the API server's kubelet client call the kubelet (logs, exec, port-forward), as kubeadm does."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "modeldeploy:kube-apiserver-kubelet-client"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT}],
    }


def coredns(image: str) -> list[Manifest]:
    """ServiceAccount, RBAC, Corefile, Deployment and the ``kube-dns`` Service, in apply order."""
    meta = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
    labels = {"k8s-app": "kube-dns"}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
        "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
    }
    container = {
        "name": "coredns", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [{"name": "dns", "containerPort": DNS_PORT, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10, "failureThreshold": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", **meta},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "coredns",
                "dnsPolicy": "Default",
                "priorityClassName": "system-cluster-critical",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
            }},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", **meta},
        "spec": {"selector": labels, "clusterIP": cluster_dns_ip(), "ports": [
            {"name": "dns", "port": 53, "targetPort": DNS_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "targetPort": DNS_PORT, "protocol": "TCP"},
        ]},
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        role, binding,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta}, "data": {"Corefile": COREFILE}},
        deployment, service,
    ]
