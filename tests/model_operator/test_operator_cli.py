"""`modeldeploy operator` is registered and documents its options."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from click.testing import CliRunner

from modeldeploy.cli import main


def test_operator_command_is_registered_with_its_options() -> None:
    result = CliRunner().invoke(main, ["operator", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--kubeconfig", "--server-image", "--namespace", "--peering", "--liveness", "--log-format"):
        assert option in result.output


def test_operator_refuses_a_missing_kubeconfig() -> None:
    result = CliRunner().invoke(main, ["operator", "--kubeconfig", "/nonexistent/kubeconfig"])
    assert result.exit_code == 2
    assert "does not exist" in result.output



def run_arguments(monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """What `modeldeploy operator ARGS` hands to kopf.run (recorded instead of connecting to a cluster)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    result = CliRunner().invoke(main, ["operator", *args])
    assert result.exit_code == 0, result.output
    (call,) = calls
    return call


def test_repeated_namespace_options_watch_only_those_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    call = run_arguments(monkeypatch, "--namespace", "team-a", "--namespace", "team-b")
    assert (call["clusterwide"], call["namespaces"]) == (False, ("team-a", "team-b"))


def test_without_namespace_options_the_whole_cluster_is_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    call = run_arguments(monkeypatch)
    assert (call["clusterwide"], call["namespaces"]) == (True, ())
