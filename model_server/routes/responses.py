"""Fast JSON responses (orjson, no response-model round trip)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def error_schema() -> dict[str, Any]:
    """The OpenAPI schema of every error body."""
    return {
        "type": "object",
        "required": ["type", "messages", "error"],
        "properties": {
            "type": {"type": "string"},
            "messages": {"type": "array", "items": {"type": "string"}},
            "error": {"type": "string"},
        },
    }


def openapi_responses(ok: dict[str, Any], *errors: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the 200 schema and the error codes it may answer."""
    table: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {"schema": ok}}}}
    for code in errors:
        table[code] = {"description": "error", "content": {"application/json": {"schema": error_schema()}}}
    return table


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON Schema with its `$defs` substituted in place (for `openapi_extra`)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result
