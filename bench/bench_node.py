"""The real node: ModelDeployment applied -> all pods Ready, against a bare pod on the same node; node RSS.

Usage: python -m bench.bench_node [--replicas 2] [--rounds 3]

Uses (or starts) the local cluster in ``build/devcluster`` with its real node, the operator as
a pod and MinIO in the cluster (the images are built and loaded first: a cold image cache is
excluded from every figure). Each round times, from ``create`` to Ready:
  * a bare pod of the server image with an exec readiness probe (the node's floor), and
  * the iris ModelDeployment with ``--replicas`` pods (the operator renders it, the init
    container downloads from MinIO and verifies the signature, the server loads and answers
    its startup and readiness probes),
and prints their ratio. Then the resident memory of what the node runs: kubelet, containerd
(with its shims), kube-proxy and the CoreDNS container.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from devcluster import build, images
from devcluster.cluster import default_state_dir, shared
from devcluster.node import NodeLayout
from devcluster.node.runtime import shim_pids
from devcluster.story import (
    GROUP,
    PLURAL,
    VERSION,
    add_model_secrets,
    get_md,
    install_operator,
    md_condition,
    model_deployment,
    publish,
    start_bucket,
)

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0"))
    return total / 1024


def pids_named(comm: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == comm:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def wait(check: Any, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError("not ready in time")
        time.sleep(0.1)
    return time.monotonic() - started


def bare_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "terminationGracePeriodSeconds": 1, "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
        "containers": [{"name": "main", "image": images.SERVER_IMAGE, "command": ["sleep", "600"],
                        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    build.ensure_binaries()
    with shared(default_state_dir(ROOT), owner="bench", node_network=True) as cluster, \
            tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
        plan = cluster.start_node()
        install_operator(cluster)
        with cluster.api_client() as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            bucket = start_bucket(cluster, images.minio_image()[0])
            published = publish(Path(tmp))
            prefix = bucket.upload(published, f"bench-{uuid.uuid4().hex[:6]}")
            bare, modeled = [], []
            for round_ in range(args.rounds):
                ns = f"bench-node-{round_}-{uuid.uuid4().hex[:4]}"
                core.create_namespace({"metadata": {"name": ns}})
                wait(lambda: core.list_namespaced_service_account(ns, field_selector="metadata.name=default").items)
                add_model_secrets(api, ns, published, bucket)
                core.create_namespaced_pod(ns, bare_pod("bare"))
                bare.append(wait(lambda: any(c.type == "Ready" and c.status == "True" for c in
                                             core.read_namespaced_pod("bare", ns).status.conditions or [])))
                body = model_deployment("iris", f"{prefix}/iris-1.0.0.tar.gz", replicas=args.replicas)
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                modeled.append(wait(lambda: md_condition(get_md(api, ns, "iris"), "Ready").get("status") == "True"
                                    and (get_md(api, ns, "iris").get("status") or {}).get("readyReplicas") == args.replicas))
                custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "iris")
                core.delete_namespace(ns)
            node = NodeLayout.of(cluster.layout, plan.name)
            memory = {
                "kubelet": rss_mib([h.pid for h in cluster.handles() if h.name == f"kubelet-{plan.name}"]),
                "containerd+shims": rss_mib([h.pid for h in cluster.handles() if h.name == f"containerd-{plan.name}"]
                                            + shim_pids(node)),
                "kube-proxy": rss_mib([h.pid for h in cluster.handles() if h.name == f"kube-proxy-{plan.name}"]),
                "coredns": rss_mib(pids_named("coredns")),
            }
    report = {
        "bare_pod_ready_s": statistics.median(bare),
        "md_all_pods_ready_s": statistics.median(modeled),
        "md_over_bare_pod": statistics.median(modeled) / statistics.median(bare),
        "replicas": args.replicas, "rounds": args.rounds,
        "node_rss_mib": {**memory, "total": sum(memory.values())},
    }
    print(f"bare pod -> Ready (median of {args.rounds}): {report['bare_pod_ready_s']:.2f} s")
    print(f"ModelDeployment ({args.replicas} replicas, S3 fetch + verify + load) -> all Ready: "
          f"{report['md_all_pods_ready_s']:.2f} s  = {report['md_over_bare_pod']:.1f}x the bare pod")
    print("node RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in report["node_rss_mib"].items()))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
