"""The package's deliberate public surface."""

from __future__ import annotations

import model_operator


def test_public_surface_is_sorted_and_complete() -> None:
    assert model_operator.__all__ == sorted(model_operator.__all__)
    assert all(hasattr(model_operator, name) for name in model_operator.__all__)
