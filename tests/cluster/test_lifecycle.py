"""Bringing a second, private control plane up and down: reuse, CLI, no leaked processes or ports."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from devcluster import process
from devcluster.cli import cluster as cluster_cli
from devcluster.cluster import Cluster
from devcluster.components import ProcessSpec

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_up_reuse_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    runner = CliRunner()
    state = str(tmp_path / "state")
    result = runner.invoke(cluster_cli, ["up", "--no-node", "--dir", state])
    assert result.exit_code == 0, result.output
    assert "cluster ready in" in result.output
    first = Cluster(Path(state)).handles()
    assert [h.name for h in first] == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]

    again = runner.invoke(cluster_cli, ["up", "--no-node", "--dir", state])
    assert again.exit_code == 0, again.output
    assert [h.pid for h in Cluster(Path(state)).handles()] == [h.pid for h in first]

    status = runner.invoke(cluster_cli, ["status", "--dir", state])
    assert status.exit_code == 0 and status.output.count("healthy") == 4, status.output
    kubeconfig = runner.invoke(cluster_cli, ["kubeconfig", "--dir", state])
    assert Path(kubeconfig.output.strip()).is_file()

    down = runner.invoke(cluster_cli, ["down", "--dir", state])
    assert down.exit_code == 0, down.output
    assert not any(process.alive(h) for h in first)
    assert not any(process.listening(h.health.url) for h in first)
    assert (tmp_path / "state" / "logs" / "kube-apiserver.log").stat().st_size > 0
    after = runner.invoke(cluster_cli, ["status", "--dir", state])
    assert after.exit_code == 1 and "no cluster" in after.output


def test_status_reports_a_killed_component(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path).up()
    try:
        scheduler = next(h for h in cluster.handles() if h.name == "kube-scheduler")
        process.stop(scheduler)
        assert not cluster.is_healthy()
        result = CliRunner().invoke(cluster_cli, ["status", "--dir", str(tmp_path)])
        assert result.exit_code == 1
        line = next(l for l in result.output.splitlines() if l.startswith("kube-scheduler"))
        assert "NOT RUNNING" in line and str(scheduler.log) in line
    finally:
        cluster.down()


def test_a_failing_component_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'Error: invalid etcd configuration' >&2\nexit 1\n")
    broken.chmod(0o755)
    cluster.binaries = dataclasses.replace(cluster.binaries, kube_apiserver=broken)
    started: list[process.Handle] = []
    real_start = process.start

    def recording_start(spec: ProcessSpec) -> process.Handle:
        started.append(real_start(spec))
        return started[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(process, "start", recording_start)
        with pytest.raises(process.ComponentError) as caught:
            cluster.up(timeout=30)
    assert caught.value.component == "kube-apiserver"
    assert caught.value.log == tmp_path / "logs" / "kube-apiserver.log"
    assert "invalid etcd configuration" in str(caught.value)
    assert [h.name for h in started] == ["etcd", "kube-apiserver"]
    assert not any(process.alive(h) for h in started)
    assert cluster.server is None
