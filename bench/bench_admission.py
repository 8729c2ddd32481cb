"""Admission latency: `create` of a ModelDeployment (server dry run) with the operator's webhooks, against without.

Usage: python -m bench.bench_admission [--requests 60]

Uses (or starts) the local cluster with its real node, the operator as the Pod of
``manifests/`` and MinIO in the cluster holding a small signed iris archive. Alternating in
one run, it times server-side dry-run creates (``dryRun=All``: every admission step runs,
nothing is stored) of
  * the ModelDeployment, through the mutating webhook (fetch the signature from MinIO, verify
    it, pin the digest) and the validating webhook (CEL policies, trust), and
  * a ConfigMap of the same size in the same namespace (no webhook: the API server's floor),
and prints p50/p99 of each and their ratio. A one-off create is warmed up first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client

from devcluster import build, images
from devcluster.cluster import default_state_dir, shared
from devcluster.story import (
    GROUP,
    PLURAL,
    VERSION,
    add_model_secrets,
    install_operator,
    model_deployment,
    publish,
    start_bucket,
)

ROOT = Path(__file__).resolve().parents[1]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    build.ensure_binaries()
    with shared(default_state_dir(ROOT), owner="bench", node_network=True) as cluster, \
            tempfile.TemporaryDirectory(prefix="admission-bench-") as tmp:
        cluster.start_node()
        install_operator(cluster)
        with cluster.api_client() as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            bucket = start_bucket(cluster, images.minio_image()[0])
            published = publish(Path(tmp))
            prefix = bucket.upload(published, f"bench-{uuid.uuid4().hex[:6]}")
            namespace = f"bench-admission-{uuid.uuid4().hex[:6]}"
            core.create_namespace({"metadata": {"name": namespace}})
            add_model_secrets(api, namespace, published, bucket)
            body = model_deployment("iris", f"{prefix}/iris-1.0.0.tar.gz")
            config = {"metadata": {"name": "floor"}, "data": {"spec": json.dumps(body["spec"])}}
            signature_bytes = len((published.bucket / "iris-1.0.0.tar.gz.sig").read_bytes())
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")  # warm
            webhooked, floor = [], []
            for _ in range(args.requests):
                started = time.perf_counter()
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
                webhooked.append(time.perf_counter() - started)
                started = time.perf_counter()
                core.create_namespaced_config_map(namespace, config, dry_run="All")
                floor.append(time.perf_counter() - started)
            core.delete_namespace(namespace)
    report = {
        "requests": args.requests,
        "signature_bytes": signature_bytes,
        "modeldeployment_ms": {"p50": 1000 * statistics.median(webhooked), "p99": 1000 * quantile(webhooked, 0.99)},
        "floor_configmap_ms": {"p50": 1000 * statistics.median(floor), "p99": 1000 * quantile(floor, 0.99)},
    }
    report["p50_over_floor"] = report["modeldeployment_ms"]["p50"] / report["floor_configmap_ms"]["p50"]
    print(f"admission of a ModelDeployment (signature {signature_bytes} B fetched from MinIO and verified), "
          f"{args.requests} dry-run creates: p50 {report['modeldeployment_ms']['p50']:.1f} ms, "
          f"p99 {report['modeldeployment_ms']['p99']:.1f} ms")
    print(f"the API server's floor (a ConfigMap, no webhook): p50 {report['floor_configmap_ms']['p50']:.1f} ms, "
          f"p99 {report['floor_configmap_ms']['p99']:.1f} ms; ratio p50 {report['p50_over_floor']:.1f}x")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
