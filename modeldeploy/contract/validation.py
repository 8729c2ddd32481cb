"""One readable line per pydantic validation error, the same everywhere a user reads them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError


def error_lines(errors: ValidationError | Iterable[Mapping[str, Any]], root: str | None = None) -> list[str]:
    """`location: message` for each error, the location dotted.

    Args:
        errors: a pydantic `ValidationError`, or its `.errors()` list (FastAPI's start with `body`, dropped).
        root: the validated document's name (e.g. `spec`), prefixed to every location.
    """
    items = errors.errors(include_url=False) if isinstance(errors, ValidationError) else errors
    lines = []
    for error in items:
        parts = [str(part) for part in error.get("loc", ())]
        if parts[:1] == ["body"]:
            parts = parts[1:]
        location = ".".join([root, *parts] if root else parts) or "body"
        lines.append(f"{location}: {error.get('msg', 'invalid')}")
    return lines
