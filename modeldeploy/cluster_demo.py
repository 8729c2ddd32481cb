"""The whole story on this machine: control plane + process node + operator + signed iris.

Builds or reuses the control plane, starts the process node, installs the operator from
``manifests/`` and runs it as a process under its ServiceAccount, trains and signs iris,
applies the ModelDeployment, predicts through pod IPs (from the EndpointSlice), then applies
tampered parameters and shows them refused while the old pods keep answering. Everything the
demo started is stopped or deleted at the end.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from rich.console import Console
from rich.panel import Panel

from devcluster import build
from devcluster.cluster import Cluster, default_state_dir, shared
from model_operator.localrun import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, OperatorProcess, install
from modeldeploy.demo import ROOT, serve_directory
from modeldeploy.story import (
    GROUP, PLURAL, SAMPLE, VERSION, Load, get_md, key_secret, md_condition, model_deployment, predict, publish,
    ready_endpoints,
)

NAMESPACE = "modeldeploy-demo"
NODE = "devnode"
SERVER_IMAGE = "ghcr.io/modeldeploy/modeldeploy-server:0.1.0"
FLOWERS = {
    "setosa-like": SAMPLE,
    "versicolor-like": {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.2, "petal_width": 1.3},
    "virginica-like": {"sepal_length": 6.9, "sepal_width": 3.1, "petal_length": 5.8, "petal_width": 2.2},
}
T = TypeVar("T")


class DemoFailed(RuntimeError):
    """A step of the story did not happen in time; the message says which."""


def wait(console: Console, what: str, check: Callable[[], T | None], progress: Callable[[], str],
         timeout: float = 240.0) -> T:
    """Poll ``check`` under a spinner that shows ``progress()``; raise ``DemoFailed`` on timeout."""
    deadline = time.monotonic() + timeout
    with console.status(what) as status:
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            status.update(f"{what} [dim]{progress()}[/]")
            time.sleep(0.5)
    raise DemoFailed(f"timed out after {timeout:.0f}s: {what} ({progress()})")


def pod_summary(core: client.CoreV1Api) -> str:
    """``iris-abc: Running 1/1, iris-def: Init:Error`` for the spinner."""
    parts = []
    for pod in core.list_namespaced_pod(NAMESPACE).items:
        inits = [s for s in pod.status.init_container_statuses or [] if s.state.waiting or s.state.running]
        ready = sum(1 for s in pod.status.container_statuses or [] if s.ready)
        if inits and inits[0].state.waiting:
            state = f"Init:{inits[0].state.waiting.reason}"
        elif inits:
            state = "Init:Running"
        else:
            state = f"{pod.status.phase} {ready}/{len(pod.spec.containers)}"
        parts.append(f"{pod.metadata.name.rsplit('-', 1)[-1]}: {state}")
    return ", ".join(parts) or "no pods yet"


def kubectl(cluster: Cluster, *args: str) -> str:
    result = subprocess.run([str(cluster.kubectl), "--kubeconfig", str(cluster.admin_kubeconfig), *args],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.rstrip()


def step(console: Console, title: str) -> None:
    console.print(f"\n[bold cyan]▶ {title}[/]")


@contextmanager
def timed(console: Console, what: str) -> Iterator[None]:
    started = time.monotonic()
    with console.status(what):
        yield
    console.print(f"  [green]✓[/] {what} [dim]({time.monotonic() - started:.1f}s)[/]")


def serving(api: client.ApiClient, replicas: int) -> dict[str, Any] | None:
    md = get_md(api, NAMESPACE, "iris")
    ok = (md_condition(md, "Ready").get("status") == "True"
          and (md.get("status") or {}).get("readyReplicas") == replicas
          and len(ready_endpoints(api, NAMESPACE, "iris")) == replicas)
    return md if ok else None


def refused(api: client.ApiClient) -> dict[str, Any] | None:
    cond = md_condition(get_md(api, NAMESPACE, "iris"), "ParametersVerified")
    return cond if cond.get("status") == "False" and cond.get("reason") not in ("Pending", "NoPods") else None


def story(console: Console, cluster: Cluster, stack: ExitStack, work: Path) -> bool:
    """Steps 2..; returns True when the tampered version was refused and no request failed."""
    step(console, "The process node: pods run as namespaced processes of this Python environment")
    had_node = any(h.name == f"node-{NODE}" for h in cluster.handles())
    with timed(console, f"node {NODE} registered and Ready"):
        cluster.start_node(NODE)
    if not had_node:
        stack.callback(cluster.stop_node, NODE)
    api = stack.enter_context(cluster.api_client())
    core = client.CoreV1Api(api)
    gateway = next(a.address for a in core.read_node(NODE).status.addresses if a.type == "InternalIP")

    step(console, "Install the operator (manifests/: CRD + RBAC) and run it under its ServiceAccount")
    with timed(console, "kubectl apply -k manifests/"):
        install(cluster.kubectl, cluster.admin_kubeconfig)
    operator = OperatorProcess(cluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT),
                               work / "operator.log", SERVER_IMAGE)
    with timed(console, f"operator running as system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"):
        operator.start()
    stack.callback(operator.stop)

    step(console, "Train and sign iris; publish the parameters (the private key never enters the cluster)")
    with timed(console, "trained, signed, published iris-1.0.0 and a tampered copy"):
        published = publish(work)
    url = stack.enter_context(serve_directory(published.bucket, host=gateway))
    console.print(f"  bucket {url}/  key {published.fingerprint[:23]}…")

    step(console, "Apply the ModelDeployment and wait until it is Ready")
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    stack.callback(_delete_namespace, core, api)
    core.create_namespaced_secret(NAMESPACE, key_secret(published.public_key))
    body = model_deployment("iris", f"{url}/iris-1.0.0.tar.gz")
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
    started = time.monotonic()
    md = wait(console, "waiting for 2 verified, ready pods", lambda: serving(api, 2), lambda: pod_summary(core))
    console.print(f"  [green]✓[/] Ready in {time.monotonic() - started:.0f}s: "
                  f"{md_condition(md, 'ParametersVerified')['reason']}, key {md['status']['verification']['keyFingerprint'][:23]}…")
    console.print(kubectl(cluster, "-n", NAMESPACE, "get", "md"), style="dim", highlight=False, soft_wrap=True)

    step(console, "Predictions through the pod IPs in the Service's EndpointSlice (no kube-proxy here)")
    endpoints = ready_endpoints(api, NAMESPACE, "iris")
    for (name, flower), endpoint in zip(FLOWERS.items(), endpoints * 2):
        answer = predict(endpoint, body=flower)
        console.print(f"  {endpoint}  {name:<16} -> [bold]{answer.json()['prediction']['species']}[/]")

    step(console, "Apply tampered parameters (one byte of model.joblib flipped, same signature) under load")
    load = Load(api, NAMESPACE, "iris", max_seconds=120).start()
    patch = {"spec": {"parameters": {"source": f"{url}/tampered.tar.gz"}}}
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "iris", patch, _content_type="application/merge-patch+json")
    cond = wait(console, "waiting for the new pod's verdict", lambda: refused(api), lambda: pod_summary(core))
    console.print(f"  [red]✗ refused[/]  ParametersVerified=False [bold]{cond['reason']}[/]: {cond['message']}")
    time.sleep(3)
    load.stop()
    for kind in ("md", "pods"):
        console.print(kubectl(cluster, "-n", NAMESPACE, "get", kind), style="dim", highlight=False, soft_wrap=True)
    answered = len(load.served_by)
    console.print(f"  old version kept answering: {load.ok} predictions from {answered} pods, "
                  f"{len(load.failures)} failed")
    return not load.failures and load.ok > 0


def _delete_namespace(core: client.CoreV1Api, api: client.ApiClient) -> None:
    """Delete the ModelDeployment first (the operator still runs to release it), then the namespace."""
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "iris")
        deadline = time.monotonic() + 60
        while core.list_namespaced_pod(NAMESPACE).items and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        core.delete_namespace(NAMESPACE)


def run(console: Console) -> int:
    console.print(Panel.fit("modeldeploy demo: a signed model served on a local Kubernetes, tampering refused"))
    step(console, "The control plane (etcd, kube-apiserver, controller-manager, scheduler), built from source")
    with timed(console, f"Kubernetes {build.K8S_VERSION} binaries ready (built once, then cached)"):
        build.ensure_binaries()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="modeldeploy-demo-") as tmp:
        with timed(console, "control plane ready"):
            cluster = stack.enter_context(shared(default_state_dir(ROOT), owner="demo"))
        try:
            ok = story(console, cluster, stack, Path(tmp))
        except DemoFailed as err:
            console.print(f"[red]{err}[/]")
            ok = False
        with console.status("cleaning up: ModelDeployment, namespace, operator, node"):
            stack.close()
    console.print(Panel.fit("[green]demo passed: verified model served, tampered update refused, "
                            "no request failed[/]" if ok else "[red]demo failed[/]"))
    return 0 if ok else 1
