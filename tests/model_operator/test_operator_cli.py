"""`modeldeploy operator` is registered and documents its options."""

from __future__ import annotations

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

