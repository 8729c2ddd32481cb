"""Cached start time and memory of the local control plane (etcd + apiserver + controllers).

Usage: python -m bench.bench_devcluster [--repeat 3] [--goal 10]

Builds the binaries if they are not cached (that first build is timed separately and
reported, not gated), then, ``--repeat`` times: starts a fresh control plane in a temporary
state directory, times ``up()`` until every component is ready, lets it settle for five
seconds, reads each process's resident memory (VmRSS), and stops it. Exits 1 when the
median start time misses ``--goal`` seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from devcluster import Cluster, ensure_binaries
from devcluster.process import Handle


def rss_mib(handle: Handle) -> float:
    """Resident memory of one process in MiB, from /proc."""
    for line in Path(f"/proc/{handle.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_once(settle: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="devcluster-bench-") as tmp:
        cluster = Cluster(Path(tmp))
        started = time.monotonic()
        cluster.up()
        try:
            seconds = time.monotonic() - started
            time.sleep(settle)
            memory = {h.name: round(rss_mib(h), 1) for h in cluster.handles()}
        finally:
            cluster.down()
    return {"start_seconds": round(seconds, 2), "rss_mib": memory, "rss_total_mib": round(sum(memory.values()), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--goal", type=float, default=10.0, help="median cached start time to meet, seconds")
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    began = time.monotonic()
    ensure_binaries()
    build_seconds = round(time.monotonic() - began, 1)
    runs = [run_once(args.settle) for _ in range(args.repeat)]
    median = statistics.median(float(r["start_seconds"]) for r in runs)  # type: ignore[arg-type]
    report = {"ensure_binaries_seconds": build_seconds, "runs": runs,
              "median_start_seconds": median, "goal_seconds": args.goal}
    print(json.dumps(report, indent=2))
    return 0 if median < args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
