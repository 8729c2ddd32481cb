"""``cluster down`` leaves nothing behind: no process, mount, cgroup, bridge, route or iptables rule.

Takes the session's cluster down, so it runs after every other test (marker ``teardown``);
not collected under ``--devcluster-keep``, which asks for the cluster to stay up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from devcluster import process
from devcluster.cli import cluster as cluster_cli
from devcluster.cluster import Cluster
from devcluster.node import NodeLayout, runtime
from devcluster.node.network import leftovers

pytestmark = [pytest.mark.cluster, pytest.mark.teardown]


def test_down_stops_everything_and_removes_mounts_bridge_routes_rules_and_cgroups(
        devcluster: Cluster, node: str) -> None:
    handles, net = devcluster.handles(), devcluster.network
    assert net is not None and {f"kubelet-{node}", f"containerd-{node}", f"kube-proxy-{node}"} <= {h.name for h in handles}
    assert runtime.mounts_below(devcluster.root), "the node mounted pod volumes and container roots"

    result = CliRunner().invoke(cluster_cli, ["down", "--dir", str(devcluster.root)])
    assert result.exit_code == 0, result.output

    assert [h.name for h in handles if process.alive(h)] == []
    assert runtime.shim_pids(NodeLayout.of(devcluster.layout, node)) == []
    assert runtime.mounts_below(devcluster.root) == []
    assert leftovers(net) == []
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods"))
