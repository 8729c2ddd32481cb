"""Fast JSON responses (orjson, no response-model round trip) and fast routes.

A fast route is a plain Starlette route: no dependency injection and no body parsing by
FastAPI, for the prediction hot paths that read and validate the raw body themselves.
Its OpenAPI operation is recorded in `app.state.fast_operations` and merged into
`/openapi.json` by `create_app`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


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
    table: dict[int | str, dict[str, Any]] = {
        200: {"description": "success", "content": {"application/json": {"schema": ok}}}
    }
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


class FastRoute(Route):
    """A Starlette route that records itself in `scope["route"]` (the metrics' endpoint label)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)


def add_fast_route(
    app: FastAPI,
    path: str,
    endpoint: Callable[[Request], Awaitable[Response]],
    *,
    tags: list[str],
    summary: str,
    body: dict[str, Any],
    description: str | None = None,
    responses: dict[int | str, dict[str, Any]],
) -> None:
    """Mount `endpoint` for POST `path` as a Starlette route and document it for OpenAPI.

    Fast routes go first: the router tries routes in order, and these are the hot paths.
    """
    app.router.routes.insert(0, FastRoute(path, endpoint, methods=["POST"]))
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "title": name.title()}}
        for name in (part[1:-1] for part in path.split("/") if part.startswith("{"))
    ]
    operation = {
        "tags": tags,
        "summary": summary,
        **({"description": description} if description else {}),
        "operationId": endpoint.__name__,
        "parameters": parameters,
        "requestBody": {"required": True, "content": {"application/json": body}},
        "responses": {str(code): response for code, response in responses.items()},
    }
    if not hasattr(app.state, "fast_operations"):
        app.state.fast_operations = {}
    app.state.fast_operations[path] = {"post": operation}
