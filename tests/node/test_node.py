"""The real node: kubelet + containerd + runc + CNI bridge, kube-proxy and CoreDNS, against the
local control plane, running pods from the images built from the project's Dockerfile."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest
from kubernetes import client

from devcluster import build, images
from devcluster.node import cluster_dns_ip
from devcluster.ports import free_port
from node.helpers import condition, container_status, create, pod, pod_body, ready, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

IMAGE = images.SERVER_IMAGE
RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
NON_ROOT = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
HTTP_SERVER = ["python", "-m", "http.server", "8080", "--directory", "/srv"]


def web_pod(name: str) -> dict[str, Any]:
    """A non-root, read-only-root HTTP server whose page an init container wrote into an emptyDir."""
    init = {"name": "write-page", "image": IMAGE, "securityContext": RESTRICTED,
            "command": ["python", "-c", "open('/srv/index.html', 'w').write('hello from the init container')"],
            "volumeMounts": [{"name": "srv", "mountPath": "/srv"}]}
    server = {"name": "web", "image": IMAGE, "command": HTTP_SERVER, "securityContext": RESTRICTED,
              "ports": [{"containerPort": 8080, "name": "http"}],
              "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
              "livenessProbe": {"exec": {"command": ["python", "-c", "import os; assert os.getuid() == 65532"]},
                                "periodSeconds": 5},
              "resources": {"limits": {"memory": "128Mi"}},
              "volumeMounts": [{"name": "srv", "mountPath": "/srv", "readOnly": True}]}
    return pod_body(name, [server], initContainers=[init], securityContext=NON_ROOT,
                    volumes=[{"name": "srv", "emptyDir": {"sizeLimit": "1Mi"}}])


def test_node_is_ready_with_the_real_kubelet_and_containerd(core: client.CoreV1Api, node: str, devcluster: Any) -> None:
    found = core.read_node(node)
    info = found.status.node_info
    assert info.kubelet_version == build.K8S_VERSION
    assert info.container_runtime_version.startswith("containerd://1.")
    assert any(c.type == "Ready" and c.status == "True" for c in found.status.conditions)
    internal = next(a.address for a in found.status.addresses if a.type == "InternalIP")
    assert internal == devcluster.node_plan.node_ip


def test_restricted_pod_runs_its_init_container_and_serves_through_its_probes(
        core: client.CoreV1Api, namespace: str, devcluster: Any) -> None:
    create(core, namespace, web_pod("web"))
    found = wait_for(lambda: ready(core, namespace, "web"), "the web pod Ready", timeout=120)
    init = container_status(found, "write-page", init=True)
    assert init is not None and init["state"]["terminated"]["exitCode"] == 0
    page = httpx.get(f"http://{found['status']['podIP']}:8080/", timeout=5)
    assert page.text == "hello from the init container"
    try_write = "import os\ntry:\n open('/x', 'w')\nexcept OSError as e:\n print(os.getuid(), e.strerror)"
    identity = devcluster.kubectl_run("-n", namespace, "exec", "web", "--", "python", "-c", try_write, check=False)
    assert identity.stdout.strip() == "65532 Read-only file system", identity.stderr
    logs = devcluster.kubectl_run("-n", namespace, "logs", "web", check=False)
    assert '"GET / HTTP/1.1" 200' in logs.stderr + logs.stdout


def test_services_answer_on_their_cluster_ip_and_dns_name_and_nothing_outside_resolves(
        core: client.CoreV1Api, namespace: str, devcluster: Any) -> None:
    create(core, namespace, web_pod("web"))
    create(core, namespace, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                             "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    wait_for(lambda: ready(core, namespace, "web"), "the web pod Ready", timeout=120)
    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    from_host = wait_for(lambda: _get(f"http://{cluster_ip}/"), "the ClusterIP from the host (kube-proxy)", timeout=60)
    assert from_host == "hello from the init container"

    probe = ("import socket, urllib.request\n"
             f"print(urllib.request.urlopen('http://web.{namespace}.svc.cluster.local/', timeout=5).read().decode())\n"
             "try:\n socket.getaddrinfo('pypi.org', 443)\n print('resolved')\nexcept socket.gaierror:\n print('unresolved')")
    client_pod = pod_body("client", [{"name": "client", "image": IMAGE, "command": ["python", "-c", probe],
                                      "securityContext": RESTRICTED}], restartPolicy="Never", securityContext=NON_ROOT)
    create(core, namespace, client_pod)
    done = wait_for(lambda: (p := pod(core, namespace, "client"))["status"].get("phase") in ("Succeeded", "Failed") and p,
                    "the client pod to finish", timeout=120)
    output = devcluster.kubectl_run("-n", namespace, "logs", "client", check=False).stdout.split()
    assert done["status"]["phase"] == "Succeeded", output
    assert output == ["hello", "from", "the", "init", "container", "unresolved"]
    resolv = devcluster.kubectl_run("-n", namespace, "exec", "web", "--", "python", "-c",
                                    "print(open('/etc/resolv.conf').read())", check=False).stdout
    assert f"nameserver {cluster_dns_ip()}" in resolv


def test_port_forward_reaches_a_pod_through_the_api_server(core: client.CoreV1Api, namespace: str,
                                                          devcluster: Any) -> None:
    create(core, namespace, web_pod("web"))
    wait_for(lambda: ready(core, namespace, "web"), "the web pod Ready", timeout=120)
    port = free_port()
    forward = subprocess.Popen(devcluster.kubectl_command("-n", namespace, "port-forward", "pod/web", f"{port}:8080"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/"), "port-forward", timeout=30) == \
            "hello from the init container"
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_failing_init_container_is_retried_with_its_termination_message(core: client.CoreV1Api, namespace: str) -> None:
    init = {"name": "refuse", "image": IMAGE, "securityContext": RESTRICTED,
            "command": ["python", "-c", "open('/dev/termination-log', 'w').write('Refused: reason'); raise SystemExit(3)"]}
    body = pod_body("refused", [{"name": "never", "image": IMAGE, "command": HTTP_SERVER}],
                    initContainers=[init], securityContext=NON_ROOT)
    create(core, namespace, body)

    def retried() -> dict[str, Any] | None:
        status = container_status(pod(core, namespace, "refused"), "refuse", init=True)
        last = ((status or {}).get("lastState") or {}).get("terminated") or {}
        return status if status and status["restartCount"] >= 1 and last.get("exitCode") == 3 else None

    status = wait_for(retried, "the failing init container to be retried", timeout=120)
    assert status["lastState"]["terminated"]["message"] == "Refused: reason"
    assert condition(pod(core, namespace, "refused"), "Ready")["status"] == "False"


def _get(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None
