"""The demo's offline act: trains, signs, fetches, and shows tampering refused (no cluster)."""

from __future__ import annotations

import pytest

from devcluster import demo


def test_demo_installs_verified_parameters_and_refuses_tampering(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.signing_story() == 0
    out = capsys.readouterr().out
    assert "SignatureValid" in out and "FilesDiffer" in out and "KeyMismatch" in out
    assert "demo passed" in out
