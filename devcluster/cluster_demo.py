"""The whole story on this machine: control plane + real node + the operator as a pod + signed iris.

Builds or reuses the cluster and its node (images built from the Dockerfile and loaded into
containerd), installs the operator with ``kubectl apply -k manifests/``, runs MinIO in the
cluster, trains and signs iris and uploads it, applies the ModelDeployment, predicts through
the Service's ClusterIP and its DNS name, then applies tampered parameters and shows them
refused while the old pods keep answering. At the end the demo's namespace goes, and the
cluster too when the demo started it; the operator and the bucket stay on a cluster that was
already running (others may use them). ``keep`` leaves everything running for ``kubectl``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from rich.console import Console
from rich.panel import Panel

from devcluster import build, images
from devcluster.cluster import Cluster, default_state_dir, shared
from devcluster.story import (
    GROUP,
    PLURAL,
    ROOT,
    SAMPLE,
    VERSION,
    Load,
    get_md,
    install_operator,
    key_secret,
    md_condition,
    model_deployment,
    predict,
    publish,
    ready_endpoints,
    service_url,
    start_bucket,
)

NAMESPACE = "modeldeploy-demo"
NODE = "devnode"
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
    """``Ready=False RolloutProgressing; abc: Running 1/1, def: Init:Error`` for the spinner
    (and for the message when the wait times out)."""
    condition = md_condition(get_md(core.api_client, NAMESPACE, "iris"), "Ready")
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
    return f"Ready={condition.get('status', '?')} {condition.get('reason', '')}; " + (", ".join(parts) or "no pods yet")


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


def exists(kubectl_args: list[str], cluster: Cluster) -> bool:
    """Whether ``kubectl get ARGS`` finds the object (so the demo removes only what it made)."""
    return cluster.kubectl_run("get", *kubectl_args, check=False).returncode == 0


DNS_PREDICTION = (
    "import json, urllib.request; r = urllib.request.Request('http://iris.{ns}.svc.cluster.local/api/models/iris/prediction',"
    " data=json.dumps({body}).encode(), headers={{'Content-Type': 'application/json'}});"
    " print(json.loads(urllib.request.urlopen(r, timeout=10).read())['prediction']['species'])"
)


def story(console: Console, cluster: Cluster, stack: ExitStack, work: Path, keep: bool) -> bool:
    """Steps 2..; returns True when the tampered version was refused and no request failed."""
    step(console, "The node: kubelet + containerd + runc + CNI, kube-proxy, CoreDNS; images built from the Dockerfile")
    with timed(console, f"images built (or cached) and loaded, node {NODE} Ready"):
        cluster.start_node(NODE)
    api = stack.enter_context(cluster.api_client())
    core = client.CoreV1Api(api)

    step(console, "Install the operator: kubectl apply -k manifests/ (two replicas, kopf peering)")
    with timed(console, "operator rolled out as the Pod of manifests/operator.yaml"):
        install_operator(cluster)

    step(console, "Train and sign iris; upload to MinIO in the cluster (the private key never enters the cluster)")
    with timed(console, "MinIO running in the cluster"):
        bucket = start_bucket(cluster, images.minio_image()[0])
    with timed(console, "trained, signed, uploaded iris-1.0.0 and a tampered copy"):
        published = publish(work)
        prefix = bucket.upload(published, "demo")
    console.print(f"  {prefix}/  key {published.fingerprint[:23]}…  (via {bucket.cluster_endpoint})")

    step(console, "Apply the ModelDeployment and wait until it is Ready")
    if exists(["namespace", NAMESPACE], cluster):
        _delete_namespace(core, api)
        wait(console, f"waiting for the previous {NAMESPACE} to go", lambda: not exists(["namespace", NAMESPACE], cluster),
             lambda: "terminating")
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    if not keep:
        stack.callback(_delete_namespace, core, api)
    core.create_namespaced_secret(NAMESPACE, key_secret(published.public_key))
    core.create_namespaced_secret(NAMESPACE, bucket.credentials_secret())
    body = model_deployment("iris", f"{prefix}/iris-1.0.0.tar.gz")
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
    started = time.monotonic()
    md = wait(console, "waiting for 2 verified, ready pods", lambda: serving(api, 2), lambda: pod_summary(core), 300)
    console.print(f"  [green]✓[/] Ready in {time.monotonic() - started:.0f}s: "
                  f"{md_condition(md, 'ParametersVerified')['reason']}, key {md['status']['verification']['keyFingerprint'][:23]}…")
    console.print(cluster.kubectl_run("-n", NAMESPACE, "get", "md").stdout.rstrip(),
                  style="dim", highlight=False, soft_wrap=True)

    url = service_url(api, NAMESPACE, "iris")
    step(console, f"Predictions through the Service's ClusterIP ({url}, kube-proxy) and its DNS name (CoreDNS)")
    for name, flower in FLOWERS.items():
        console.print(f"  {url}  {name:<16} -> [bold]{predict(url, body=flower).json()['prediction']['species']}[/]")
    pod = next(p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items)
    species = cluster.kubectl_run("-n", NAMESPACE, "exec", pod, "-c", "server", "--", "python", "-c",
                                  DNS_PREDICTION.format(ns=NAMESPACE, body=FLOWERS["virginica-like"])).stdout.rstrip()
    console.print(f"  from pod {pod}: iris.{NAMESPACE}.svc.cluster.local  virginica-like -> [bold]{species}[/]")
    fetch_log = cluster.kubectl_run("-n", NAMESPACE, "logs", pod, "-c", "fetch").stdout.rstrip()
    console.print(f"  kubectl logs {pod} -c fetch: [dim]{fetch_log}[/]", soft_wrap=True)

    step(console, "Apply tampered parameters (one byte of model.joblib flipped, same signature) under load")
    load = Load(url, max_seconds=180).start()
    patch = {"spec": {"parameters": {"source": f"{prefix}/tampered.tar.gz"}}}
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "iris", patch, _content_type="application/merge-patch+json")
    cond = wait(console, "waiting for the new pod's verdict", lambda: refused(api), lambda: pod_summary(core))
    console.print(f"  [red]✗ refused[/]  ParametersVerified=False [bold]{cond['reason']}[/]: {cond['message']}")
    time.sleep(3)
    load.stop()
    for kind in ("md", "pods"):
        console.print(cluster.kubectl_run("-n", NAMESPACE, "get", kind).stdout.rstrip(),
                      style="dim", highlight=False, soft_wrap=True)
    console.print(f"  old version kept answering: {load.ok} predictions, {len(load.failures)} failed")
    if keep:
        console.print(f"\n  left running: export KUBECONFIG={cluster.admin_kubeconfig}; "
                      f"kubectl -n {NAMESPACE} get md,pods,svc  (stop: python -m devcluster down)")
    return not load.failures and load.ok > 0


def _delete_namespace(core: client.CoreV1Api, api: client.ApiClient) -> None:
    """Delete the ModelDeployment first (the operator still runs to release it), then the namespace."""
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "iris")
        deadline = time.monotonic() + 60
        while core.list_namespaced_pod(NAMESPACE).items and time.monotonic() < deadline:
            time.sleep(0.5)
    except client.ApiException as err:
        if err.status != 404:
            raise
    finally:
        core.delete_namespace(NAMESPACE)


def run(console: Console, keep: bool = False) -> int:
    """The whole story; with ``keep`` the cluster, operator, bucket and ModelDeployment stay for ``kubectl``."""
    console.print(Panel.fit("modeldeploy demo: a signed model served on a local Kubernetes, tampering refused"))
    step(console, "The control plane (etcd, kube-apiserver, controller-manager, scheduler), built from source")
    with timed(console, f"Kubernetes {build.K8S_VERSION} binaries ready (built once, then cached)"):
        build.ensure_binaries()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="modeldeploy-demo-") as tmp:
        with timed(console, "control plane ready"):
            cluster = stack.enter_context(shared(default_state_dir(ROOT), owner="demo", keep=keep, node_network=True))
        try:
            ok = story(console, cluster, stack, Path(tmp), keep)
        except DemoFailed as err:
            console.print(f"[red]{err}[/]")
            ok = False
        with console.status("cleaning up what the demo started" if not keep else "leaving the cluster running"):
            stack.close()
    console.print(Panel.fit("[green]demo passed: verified model served, tampered update refused, "
                            "no request failed[/]" if ok else "[red]demo failed[/]"))
    return 0 if ok else 1
