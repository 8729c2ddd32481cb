"""Pods created through the API server really run on the process node (``devcluster.node``).

Every check reads what the node wrote back through the API (pod status, Node, Lease,
EndpointSlices from the real controller-manager) or talks to the pod over its own IP.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .helpers import IMAGE, condition, container_status, create, gone, pod, pod_body, ready, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(240)]

SUMMARY = r"""
import functools, http.server, json, os, pathlib
names = ["PLAIN", "EXPANDED", "FROM_CM", "FROM_SECRET", "POD_NAME", "POD_NS", "POD_IP", "NODE", "LABEL",
         "CM_greeting", "S_token", "MISSING_OPTIONAL"]
files = ["/etc/app/greeting", "/etc/items/renamed/g.txt", "/etc/one/greeting.txt", "/etc/secret/token",
         "/shared/order.txt", "/host/from-host.txt", "/claim/hello.txt", "/etc/podinfo/labels"]
summary = {
    "env": {n: os.environ.get(n) for n in names},
    "cwd": os.getcwd(),
    "files": {f: pathlib.Path(f).read_text() for f in files},
    "secret_writable": os.access("/etc/secret", os.W_OK),
    "token": pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/token").read_text().count(".") == 2,
}
pathlib.Path("summary.json").write_text(json.dumps(summary))
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/shared")
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), handler).serve_forever()
"""


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def netns_names() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_node_registers_ready_with_capacity_and_a_lease(devcluster: Any, core: client.CoreV1Api, node: str) -> None:
    found = core.read_node(node)
    ready_cond = next(c for c in found.status.conditions if c.type == "Ready")
    assert ready_cond.status == "True" and ready_cond.reason == "KubeletReady"
    assert found.status.capacity["pods"] == "110" and found.status.addresses[0].type == "InternalIP"
    lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease(node, "kube-node-lease")
    assert lease.spec.holder_identity == node and lease.spec.renew_time is not None


def test_init_order_volumes_env_and_termination_message(core: client.CoreV1Api, namespace: str,
                                                        tmp_path: Path) -> None:
    host_dir, claim_dir = tmp_path / "host", tmp_path / "claim"
    host_dir.mkdir()
    claim_dir.mkdir()
    (host_dir / "from-host.txt").write_text("host file")
    (claim_dir / "hello.txt").write_text("claimed")
    create(core, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                             "data": {"greeting": "hello", "colour": "blue"}})
    create(core, namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                             "stringData": {"token": "s3cret"}})
    pv_name = f"pv-{namespace}"
    core.create_persistent_volume({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
                                   "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                                            "storageClassName": "", "hostPath": {"path": str(claim_dir)}}})
    try:
        create(core, namespace, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                                          "volumeName": pv_name, "resources": {"requests": {"storage": "1Mi"}}}})
        shared = {"name": "shared", "mountPath": "/shared"}
        body = pod_body("app", [{
            "name": "main", "image": IMAGE, "command": ["python", "-c", SUMMARY], "workingDir": "/shared",
            "env": [
                {"name": "PLAIN", "value": "v"},
                {"name": "EXPANDED", "value": "$(PLAIN)-x"},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "colour"}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "MISSING_OPTIONAL", "valueFrom": {"configMapKeyRef": {
                    "name": "nope", "key": "x", "optional": True}}},
            ],
            "envFrom": [{"prefix": "CM_", "configMapRef": {"name": "cfg"}}, {"prefix": "S_", "secretRef": {"name": "creds"}}],
            "volumeMounts": [
                shared,
                {"name": "cfg", "mountPath": "/etc/app"},
                {"name": "cfg-items", "mountPath": "/etc/items"},
                {"name": "cfg", "mountPath": "/etc/one/greeting.txt", "subPath": "greeting"},
                {"name": "creds", "mountPath": "/etc/secret", "readOnly": True},
                {"name": "host", "mountPath": "/host"},
                {"name": "claim", "mountPath": "/claim"},
                {"name": "podinfo", "mountPath": "/etc/podinfo"},
            ],
            "readinessProbe": {"httpGet": {"path": "/summary.json", "port": 8080}, "periodSeconds": 1},
        }], initContainers=[
            {"name": "first", "image": IMAGE, "command": ["sh", "-c", "echo first >> /shared/order.txt"],
             "volumeMounts": [shared]},
            {"name": "second", "image": IMAGE, "volumeMounts": [shared], "command": [
                "sh", "-c", "echo second >> /shared/order.txt; cat /shared/order.txt > /dev/termination-log"]},
        ], volumes=[
            {"name": "shared", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "cfg-items", "configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "renamed/g.txt"}]}},
            {"name": "creds", "secret": {"secretName": "creds"}},
            {"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        ])
        create(core, namespace, body)
        running = wait_for(lambda: ready(core, namespace, "app"), "pod app Ready")
        status = running["status"]
        assert status["phase"] == "Running"
        assert [condition(running, t)["status"] for t in ("Initialized", "ContainersReady", "Ready")] == ["True"] * 3
        first, second = status["initContainerStatuses"]
        assert first["state"]["terminated"]["exitCode"] == 0 and first["state"]["terminated"]["reason"] == "Completed"
        assert second["state"]["terminated"]["message"] == "first\nsecond\n"
        main = container_status(running, "main")
        assert main and main["ready"] and main["started"] and main["restartCount"] == 0 and "running" in main["state"]

        summary = http_json(f"http://{status['podIP']}:8080/summary.json")
        assert summary["env"] == {
            "PLAIN": "v", "EXPANDED": "v-x", "FROM_CM": "blue", "FROM_SECRET": "s3cret", "POD_NAME": "app",
            "POD_NS": namespace, "POD_IP": status["podIP"], "NODE": running["spec"]["nodeName"], "LABEL": "app",
            "CM_greeting": "hello", "S_token": "s3cret", "MISSING_OPTIONAL": None,
        }
        assert summary["cwd"] == "/shared"
        assert summary["files"] == {
            "/etc/app/greeting": "hello", "/etc/items/renamed/g.txt": "hello", "/etc/one/greeting.txt": "hello",
            "/etc/secret/token": "s3cret", "/shared/order.txt": "first\nsecond\n", "/host/from-host.txt": "host file",
            "/claim/hello.txt": "claimed", "/etc/podinfo/labels": 'app="app"',
        }
        assert summary["secret_writable"] is False and summary["token"] is True
        assert not Path("/etc/app/greeting").exists(), "mounts stay inside the container's mount namespace"
    finally:
        core.delete_persistent_volume(pv_name)


def test_probes_gate_start_and_readiness_and_liveness_restarts(core: client.CoreV1Api, namespace: str,
                                                               tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.mkdir()
    (control / "alive").write_text("yes")
    period = {"periodSeconds": 1, "timeoutSeconds": 1}
    create(core, namespace, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                             "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    create(core, namespace, pod_body("web", [
        {"name": "http", "image": IMAGE, "command": ["python", "-m", "http.server", "8080", "--directory", "/ctl"],
         "volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}],
         "startupProbe": {"exec": {"command": ["test", "-f", "/ctl/started"]}, "failureThreshold": 120, **period},
         "readinessProbe": {"httpGet": {"path": "/ready", "port": "web"}, "failureThreshold": 1, **period},
         "livenessProbe": {"httpGet": {"path": "/alive", "port": 8080}, "failureThreshold": 2, **period},
         "ports": [{"name": "web", "containerPort": 8080}]},
        {"name": "tcp", "image": IMAGE, "command": ["python", "-m", "http.server", "9090"],
         "readinessProbe": {"tcpSocket": {"port": 9090}, **period}},
    ], terminationGracePeriodSeconds=5, volumes=[{"name": "ctl", "hostPath": {"path": str(control)}}]))

    def statuses() -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in (pod(core, namespace, "web")["status"].get("containerStatuses") or [])}

    wait_for(lambda: statuses().get("tcp", {}).get("ready"), "the tcpSocket readiness probe to pass")
    time.sleep(2)
    http = statuses()["http"]
    assert "running" in http["state"] and http["started"] is False and http["ready"] is False
    assert condition(pod(core, namespace, "web"), "Ready")["status"] == "False"

    (control / "started").write_text("")
    wait_for(lambda: statuses()["http"]["started"], "the startup probe to pass")
    assert statuses()["http"]["ready"] is False, "readiness still fails: /ready is missing"
    (control / "ready").write_text("")
    ready_pod = wait_for(lambda: ready(core, namespace, "web"), "pod Ready")
    ip = ready_pod["status"]["podIP"]

    discovery = client.DiscoveryV1Api(core.api_client)

    def slice_addresses() -> list[tuple[str, bool]]:
        slices = discovery.list_namespaced_endpoint_slice(namespace, label_selector="kubernetes.io/service-name=web")
        return [(a, bool(e.conditions.ready)) for s in slices.items for e in s.endpoints or [] for a in e.addresses]

    wait_for(lambda: slice_addresses() == [(ip, True)], "the EndpointSlice to list the ready pod IP")

    (control / "ready").unlink()
    wait_for(lambda: not statuses()["http"]["ready"], "readiness to fail")
    wait_for(lambda: slice_addresses() == [(ip, False)], "the EndpointSlice to mark the pod not ready")
    assert statuses()["http"]["restartCount"] == 0, "a readiness failure does not restart"

    (control / "alive").unlink()
    restarted = wait_for(lambda: statuses()["http"]["restartCount"] >= 1 and statuses()["http"], "a liveness restart")
    assert restarted["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM
    (control / "alive").write_text("yes")
    (control / "ready").write_text("")
    again = wait_for(lambda: ready(core, namespace, "web"), "Ready again after the restart")
    assert container_status(again, "http")["restartCount"] >= 1 and "running" in container_status(again, "http")["state"]


def test_failing_init_container_crash_loops_with_its_message(core: client.CoreV1Api, namespace: str) -> None:
    create(core, namespace, pod_body("broken", [{"name": "main", "image": IMAGE, "command": ["sleep", "600"]}],
                                     initContainers=[{"name": "verify", "image": IMAGE, "command": [
                                         "sh", "-c", "echo 'signature does not match' > /dev/termination-log; exit 3"]}]))

    def crash_looping() -> dict[str, Any] | None:
        found = pod(core, namespace, "broken")
        init = container_status(found, "verify", init=True)
        waiting = (init or {}).get("state", {}).get("waiting", {})
        return found if init and init["restartCount"] >= 1 and waiting.get("reason") == "CrashLoopBackOff" else None

    found = wait_for(crash_looping, "Init:CrashLoopBackOff", timeout=90)
    init = container_status(found, "verify", init=True)
    assert init["lastState"]["terminated"]["exitCode"] == 3
    assert init["lastState"]["terminated"]["reason"] == "Error"
    assert init["lastState"]["terminated"]["message"] == "signature does not match\n"
    assert found["status"]["phase"] == "Pending"
    assert condition(found, "Initialized")["status"] == "False"
    assert container_status(found, "main")["state"]["waiting"]["reason"] == "PodInitializing"


def test_restart_policy_never_reports_success_and_failure_from_logs(core: client.CoreV1Api, namespace: str) -> None:
    create(core, namespace, pod_body("ok", [{"name": "main", "image": IMAGE, "command": ["true"]}],
                                     restartPolicy="Never"))
    create(core, namespace, pod_body("fails", [{
        "name": "main", "image": IMAGE, "command": ["sh", "-c", "echo boom-from-logs; exit 2"],
        "terminationMessagePolicy": "FallbackToLogsOnError"}], restartPolicy="Never"))
    done = wait_for(lambda: pod(core, namespace, "ok")["status"].get("phase") == "Succeeded"
                    and pod(core, namespace, "ok"), "pod ok Succeeded")
    assert container_status(done, "main")["state"]["terminated"]["reason"] == "Completed"
    failed = wait_for(lambda: pod(core, namespace, "fails")["status"].get("phase") == "Failed"
                      and pod(core, namespace, "fails"), "pod fails Failed")
    terminated = container_status(failed, "main")["state"]["terminated"]
    assert terminated["exitCode"] == 2 and "boom-from-logs" in terminated["message"]
    assert container_status(failed, "main")["restartCount"] == 0


def test_always_restarts_a_crashing_container_with_back_off(core: client.CoreV1Api, namespace: str) -> None:
    create(core, namespace, pod_body("crash", [{"name": "main", "image": IMAGE, "command": ["sh", "-c", "exit 1"]}]))

    def backing_off() -> dict[str, Any] | None:
        status = container_status(pod(core, namespace, "crash"), "main") or {}
        waiting = status.get("state", {}).get("waiting", {})
        return status if status.get("restartCount", 0) >= 1 and waiting.get("reason") == "CrashLoopBackOff" else None

    status = wait_for(backing_off, "CrashLoopBackOff", timeout=90)
    assert "back-off" in status["state"]["waiting"]["message"]
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert pod(core, namespace, "crash")["status"]["phase"] == "Running"


def test_deletion_sends_sigterm_then_removes_pod_and_namespace(core: client.CoreV1Api, namespace: str,
                                                              tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    polite = "trap 'echo term > /marks/got-term; exit 0' TERM; touch /marks/trapping; while true; do sleep 0.1; done"
    stubborn = "trap '' TERM; while true; do sleep 0.1; done"
    for name, script in (("polite", polite), ("stubborn", stubborn)):
        create(core, namespace, pod_body(name, [{"name": "main", "image": IMAGE, "command": ["sh", "-c", script],
                                                 "volumeMounts": [{"name": "marks", "mountPath": "/marks"}]}],
                                         volumes=[{"name": "marks", "hostPath": {"path": str(marks)}}]))
    uids = {name: wait_for(lambda n=name: ready(core, namespace, n), f"{name} Ready")["metadata"]["uid"]
            for name in ("polite", "stubborn")}
    for uid in uids.values():
        assert uid.replace("-", "")[:12] in netns_names()
    wait_for(lambda: (marks / "trapping").exists(), "the polite container to trap SIGTERM")

    started = time.monotonic()
    core.delete_namespaced_pod("polite", namespace, grace_period_seconds=30)
    wait_for(lambda: gone(core, namespace, "polite"), "polite removed", timeout=20)
    assert time.monotonic() - started < 10, "a container that exits on SIGTERM does not wait out the grace period"
    assert (marks / "got-term").read_text() == "term\n"

    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=3)
    wait_for(lambda: gone(core, namespace, "stubborn"), "stubborn removed", timeout=30)
    assert time.monotonic() - started >= 3, "SIGKILL comes only after the grace period"
    names = netns_names()
    assert not any(uid.replace("-", "")[:12] in names for uid in uids.values())


def test_unknown_image_is_reported_like_a_failed_pull(core: client.CoreV1Api, namespace: str) -> None:
    create(core, namespace, pod_body("nginx", [{"name": "web", "image": "docker.io/library/nginx:1.27"}]))

    def pull_failed() -> dict[str, Any] | None:
        status = container_status(pod(core, namespace, "nginx"), "web") or {}
        waiting = status.get("state", {}).get("waiting", {})
        return waiting if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    waiting = wait_for(pull_failed, "ErrImagePull")
    assert "docker.io/library/nginx:1.27" in waiting["message"]
    wait_for(lambda: (pull_failed() or {}).get("reason") == "ImagePullBackOff", "ImagePullBackOff")
    assert pod(core, namespace, "nginx")["status"]["phase"] == "Pending"


def test_a_volume_over_the_checkout_keeps_the_images_python_environment(core: client.CoreV1Api,
                                                                       namespace: str) -> None:
    checkout = Path(__file__).resolve().parents[2]
    script = f'modeldeploy --version && test "$(ls -A {checkout.parent})" = "{checkout.name}"'
    create(core, namespace, pod_body("hidden", [{
        "name": "main", "image": IMAGE, "command": ["sh", "-c", script],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": str(checkout.parent)}]}],
        restartPolicy="Never", volumes=[{"name": "scratch", "emptyDir": {}}]))
    done = wait_for(lambda: pod(core, namespace, "hidden")["status"].get("phase") in ("Succeeded", "Failed")
                    and pod(core, namespace, "hidden"), "pod hidden finished")
    assert done["status"]["phase"] == "Succeeded", container_status(done, "main")["state"]
