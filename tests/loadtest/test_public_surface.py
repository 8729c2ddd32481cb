"""The package's public surface is deliberate: a sorted `__all__` of names that exist."""

from __future__ import annotations

import modeldeploy.loadtest as loadtest


def test_all_is_sorted_and_every_name_exists() -> None:
    assert loadtest.__all__ == sorted(loadtest.__all__)
    assert all(hasattr(loadtest, name) for name in loadtest.__all__)


def test_the_command_is_registered() -> None:
    from modeldeploy.cli import COMMANDS

    assert COMMANDS["loadtest"].target == "modeldeploy.loadtest.cli:loadtest"
