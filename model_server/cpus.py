"""How many worker processes `modeldeploy serve --workers auto` runs: the container's CPU limit.

Pure apart from reading the cgroup files under a given root (tests pass their own): cgroup v2
`cpu.max` ("QUOTA PERIOD" or "max PERIOD"), else cgroup v1 `cpu/cpu.cfs_quota_us` and
`cpu/cpu.cfs_period_us` (quota -1: no limit). The limit is rounded up (1.5 CPUs: 2 workers)
and capped by the CPUs this process may run on; a file that is missing or unreadable
counts as no limit.
"""

from __future__ import annotations

import math
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _limit(quota: str, period: str) -> int | None:
    """ceil(quota / period), or None for no (or a nonsensical) limit."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return math.ceil(quota_us / period_us)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """The CPU limit of the cgroup mounted at `root`, in whole CPUs rounded up; None if it has none."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        fields = v2.split()
        return _limit(fields[0], fields[1]) if len(fields) == 2 and fields[0] != "max" else None
    for controller in ("cpu", "cpu,cpuacct"):
        quota = _read(root / controller / "cpu.cfs_quota_us")
        period = _read(root / controller / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _limit(quota, period)
    return None


def auto_workers(limit: int | None, usable_cpus: int) -> int:
    """Workers for a CPU `limit` (None: none) when `usable_cpus` are in this process's affinity; at least 1."""
    return max(1, min(limit, usable_cpus) if limit is not None else usable_cpus)
