"""Turns the server's exceptions into `{"type", "messages", "error"}` JSON responses.

`error` repeats the first message, as Open Inference Protocol v2 clients expect.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from model_server.errors import ServerError
from model_server.routes.responses import json_response
from modeldeploy.contract.validation import error_lines

logger = logging.getLogger(__name__)


def error_response(
    status_code: int, type_: str, messages: list[str], headers: dict[str, str] | None = None, **details: Any
) -> Response:
    """The JSON error body every failure uses."""
    body = {"type": type_, "messages": messages, "error": messages[0] if messages else type_, **details}
    response = json_response(body, status_code)
    response.headers.update(headers or {})
    return response


async def _server_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServerError)
    return error_response(exc.status_code, type(exc).__name__, exc.messages, **exc.details)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "InvalidInput", error_lines(exc.errors()))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    names = {404: "NotFound", 405: "MethodNotAllowed"}
    # a 405 keeps Starlette's `Allow` header (RFC 9110)
    return error_response(
        exc.status_code, names.get(exc.status_code, "HTTPError"), [str(exc.detail)], headers=dict(exc.headers or {})
    )


async def _unexpected(_: Request, exc: Exception) -> Response:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "InternalError", [f"{type(exc).__name__}: {exc}"])


def register(app: FastAPI) -> None:
    """Install the exception table on `app`."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(ServerError, _server_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
