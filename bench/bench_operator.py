"""Operator throughput: N ModelDeployments applied -> time until every Deployment exists.

Usage: python -m bench.bench_operator [--count 1000] [--creators 16] [--timeout 600]

Against the local control plane (devcluster; built and started if needed), with the install
manifests applied and `modeldeploy operator` running as a child process under its own
ServiceAccount: creates --count ModelDeployments in a fresh namespace as fast as the API
server takes them (--creators threads at once), watches Deployments, and reports the wall time until all exist, the
per-object latency (create sent -> Deployment ADDED seen), the operator's own reconcile
durations (from its JSON log, lock wait excluded), its CPU time and its resident memory. Bounded by --timeout; the namespace
is deleted afterwards. No pods run (no kubelet), so this measures the control loop only.
The goals (all Deployments within 30 s of the first create for 1,000, reconcile with apply
p50 < 100 ms, peak RSS < 200 MiB) are printed as met or not, with the figures per ModelDeployment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from devcluster import ensure_binaries
from devcluster.cluster import default_state_dir, shared
from devcluster.localrun import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    OperatorProcess,
    install,
)

ROOT = Path(__file__).resolve().parents[1]
RECONCILED = re.compile(r"Reconciled in ([0-9.]+)s \((\d+) children applied\)")
GOALS = {"all_deployments_exist_seconds": 30.0, "reconcile_apply_p50_seconds": 0.1, "operator_rss_peak_mib": 200.0}
GOAL_COUNT = 1000  # the count the 30 s goal is set for (scaled linearly for other counts)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50": round(percentile(values, 50), 4), "p99": round(percentile(values, 99), 4),
            "max": round(max(values), 4), "mean": round(statistics.fmean(values), 4)}


def model_deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "iris", "version": "1.0.0"},
            "parameters": {"source": f"s3://models/{name}/", "publicKey": {"secretName": "key"}},
            "replicas": 2,
            "policies": [{"name": "no-tiny", "when": "input.sepal_length < 1.0", "action": "reject"}],
        },
    }


def watch_deployments(api: client.ApiClient, namespace: str, seen: dict[str, float], stop: threading.Event) -> None:
    apps = client.AppsV1Api(api)
    while not stop.is_set():
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            apps.list_namespaced_deployment, namespace, timeout_seconds=5)
        for event in stream:
            name = event["object"].metadata.name
            if event["type"] == "ADDED" and name not in seen:
                seen[name] = time.monotonic()
            if stop.is_set():
                break


def run(count: int, timeout: float, creators: int) -> dict[str, Any]:
    ensure_binaries()
    with shared(default_state_dir(ROOT), owner="bench") as cluster, tempfile.TemporaryDirectory() as tmp:
        install(cluster)
        operator = OperatorProcess(
            cluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT),
            Path(tmp) / "operator.log", "modeldeploy-server:bench",
        )
        operator.start()
        rss_idle, _ = operator.rss_mib()
        cpu_idle = operator.cpu_seconds()
        namespace = f"bench-operator-{uuid.uuid4().hex[:6]}"
        with cluster.api_client() as api, cluster.api_client() as watch_api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            seen: dict[str, float] = {}
            stop = threading.Event()
            watcher = threading.Thread(target=watch_deployments, args=(watch_api, namespace, seen, stop), daemon=True)
            try:
                watcher.start()
                time.sleep(1)
                sent: dict[str, float] = {}

                def create(index: int) -> None:
                    name = f"md-{index:04d}"
                    sent[name] = time.monotonic()
                    custom.create_namespaced_custom_object(
                        "modeldeploy.io", "v1alpha1", namespace, "modeldeployments", model_deployment(name))

                began = time.monotonic()
                with ThreadPoolExecutor(creators) as pool:
                    list(pool.map(create, range(count)))
                created = time.monotonic() - began
                deadline = began + timeout
                while len(seen.keys() & sent.keys()) < count and time.monotonic() < deadline:
                    time.sleep(0.1)
                done = max(seen.values(), default=began) - began
                rss, peak = operator.rss_mib()
                cpu = operator.cpu_seconds() - cpu_idle
            finally:
                stop.set()
                core.delete_namespace(namespace)
                operator.stop()
        latencies = [seen[name] - sent[name] for name in sent if name in seen]
        durations = [(float(m[1]), int(m[2])) for r in operator.records()
                     if (m := RECONCILED.search(r.get("message", "")))]
    return {
        "model_deployments": count,
        "deployments_seen": len(latencies),
        "create_calls_seconds": round(created, 2),
        "all_deployments_exist_seconds": round(done, 2) if len(latencies) == count else None,
        "create_to_deployment_seconds": summary(latencies),
        "reconcile_apply_seconds": summary([d for d, applied in durations if applied]),
        "reconcile_status_only_seconds": summary([d for d, applied in durations if not applied]),
        "operator_cpu_seconds": round(cpu, 1),
        "machine_load_average_1m": round(os.getloadavg()[0], 2),
        "operator_rss_mib": {"idle": round(rss_idle, 1), "after": round(rss, 1), "peak": round(peak, 1)},
        "per_model_deployment": {"operator_cpu_ms": round(cpu / count * 1000, 1),
                                 "operator_rss_kib": round((rss - rss_idle) / count * 1024, 1)},
    }


def goals(report: dict[str, Any]) -> list[str]:
    """One line per goal: the figure, the limit (the time limit scaled to --count), met or not."""
    count = report["model_deployments"]
    figures = {
        "all_deployments_exist_seconds": (report["all_deployments_exist_seconds"],
                                          GOALS["all_deployments_exist_seconds"] * count / GOAL_COUNT),
        "reconcile_apply_p50_seconds": (report["reconcile_apply_seconds"].get("p50"),
                                        GOALS["reconcile_apply_p50_seconds"]),
        "operator_rss_peak_mib": (report["operator_rss_mib"]["peak"], GOALS["operator_rss_peak_mib"]),
    }
    lines = []
    for name, (value, limit) in figures.items():
        verdict = "NOT met (no figure)" if value is None else (
            "met" if value < limit else f"NOT met by {value / limit:.2f}x")
        lines.append(f"goal {name} < {limit:g}: {value} {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=GOAL_COUNT)
    parser.add_argument("--creators", type=int, default=16, help="threads creating ModelDeployments at once")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args()
    report = run(args.count, args.timeout, args.creators)
    print(json.dumps(report, indent=2))
    print("\n".join(goals(report)))
    return 0 if report["deployments_seen"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
