"""One readable line per pydantic validation error, the same everywhere a user reads them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError


def error_lines(errors: ValidationError | Iterable[Mapping[str, Any]], root: str = "") -> list[str]:
    """`location: message` for each error; the location is dotted and starts with `root`.

    Args:
        errors: a pydantic `ValidationError`, or its `.errors()` list (FastAPI passes those).
        root: the name of the validated document, e.g. `spec`; used alone when the error has no location.
    """
    items = errors.errors(include_url=False) if isinstance(errors, ValidationError) else errors
    lines = []
    for error in items:
        location = ".".join([root] * bool(root) + [str(part) for part in error.get("loc", ())])
        lines.append(f"{location or 'input'}: {error.get('msg', 'invalid')}")
    return lines
