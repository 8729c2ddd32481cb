"""Process node: start time, pod create->Ready and delete->gone latency, agent memory.

Usage: python bench/bench_node.py [--pods 10] [--goal 5]

Starts (or reuses) the local control plane in a temporary state directory, starts the
process node, creates ``--pods`` pods at once (a container with an exec readiness probe
and a 1 s grace period) and times each from creation to Ready and from deletion to gone,
reads the agent's resident memory, then stops everything. Exits 1 when the median
create->Ready latency misses ``--goal`` seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from devcluster import Cluster, ensure_binaries

NAMESPACE = "bench-node"


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "modeldeploy-server:bench", "command": ["sleep", "600"],
                        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}}


def ready_names(core: client.CoreV1Api) -> set[str]:
    return {p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}


def until(names: set[str], probe: Any, timeout: float = 120.0) -> dict[str, float]:
    """Seconds (since now) at which each name first appears in ``probe()``."""
    started, seen = time.monotonic(), {}
    while set(seen) != names and time.monotonic() - started < timeout:
        for name in probe() - set(seen):
            seen[name] = time.monotonic() - started
        time.sleep(0.05)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--goal", type=float, default=5.0, help="median create->Ready seconds to meet")
    args = parser.parse_args()
    ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
        cluster = Cluster(Path(tmp))
        cluster.up()
        try:
            started = time.monotonic()
            handle = cluster.start_node()
            node_seconds = time.monotonic() - started
            with cluster.api_client() as api:
                core = client.CoreV1Api(api)
                core.create_namespace({"metadata": {"name": NAMESPACE}})
                until({"default"}, lambda: {s.metadata.name for s in
                                            core.list_namespaced_service_account(NAMESPACE).items})
                names = {f"p{i}" for i in range(args.pods)}
                for name in sorted(names):
                    core.create_namespaced_pod(NAMESPACE, pod(name))
                to_ready = until(names, lambda: ready_names(core))
                rss = int(next(line for line in Path(f"/proc/{handle.pid}/status").read_text().splitlines()
                               if line.startswith("VmRSS:")).split()[1]) / 1024
                for name in sorted(names):
                    core.delete_namespaced_pod(name, NAMESPACE)
                to_gone = until(names, lambda: names - {p.metadata.name for p in
                                                        core.list_namespaced_pod(NAMESPACE).items})
        finally:
            cluster.down()
    median = statistics.median(to_ready.values()) if len(to_ready) == len(names) else float("inf")
    report = {
        "node_start_seconds": round(node_seconds, 2), "pods": args.pods,
        "create_to_ready_seconds": {"median": round(median, 2), "max": round(max(to_ready.values(), default=0), 2)},
        "delete_to_gone_seconds": {"median": round(statistics.median(to_gone.values()), 2) if to_gone else None,
                                   "max": round(max(to_gone.values(), default=0), 2)},
        "agent_rss_mib": round(rss, 1), "goal_seconds": args.goal,
    }
    print(json.dumps(report, indent=2))
    return 0 if median <= args.goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
