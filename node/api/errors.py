"""Errors on the wire: OpenAI's shape with a `b3iq` block on /v1, problem JSON elsewhere."""

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec

from domain.openai_errors import OpenAIErrorBody, openai_error
from node.errors import NodeError

log = logging.getLogger("b3iq.node")

_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
_CODES |= {415: "unsupported_media_type"}
_JSON_PATH = re.compile(r"\s*-\s*at `\$\.?([^`]*)`$")


def documented(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of the errors a /v1 route answers besides its success, so its
    schema names every status it can give."""
    return {
        status: ResponseSpec(
            OpenAIErrorBody,
            description=NodeError(status, "", "").title,
            media_type="application/json",
            generate_examples=False,
        )
        for status in statuses
    }


def error_body(error: NodeError, openai: bool) -> dict[str, Any]:
    if openai:
        return openai_error(
            error.status, error.code, error.title, error.message, error.param, error.family
        )
    problem = {
        "status": error.status,
        "title": error.title,
        "detail": error.message,
        "code": error.family,
    }
    return {"error": problem}


def render(request: Request[Any, Any, Any], error: NodeError) -> Response[Any]:
    openai = request.url.path.startswith("/v1/")
    headers = {"Retry-After": "1"} if error.status in (429, 503) else None
    return Response(error_body(error, openai), status_code=error.status, headers=headers)


def from_validation(exc: ValidationException) -> NodeError:
    """A 400 that names the offending field, from Litestar's msgspec validation error."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        path = _JSON_PATH.search(message)
        param = path.group(1) if path else item.get("key")
        message = _JSON_PATH.sub("", message)
        if param and param != "data":
            return NodeError(400, "invalid_request", f"{param}: {message}", param=str(param))
        return NodeError(400, "invalid_request", f"malformed request body: {message}")
    return NodeError(400, "invalid_request", f"malformed request: {exc.detail}")


def handle_node_error(request: Request[Any, Any, Any], exc: NodeError) -> Response[Any]:
    return render(request, exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return render(request, from_validation(exc))
    status = exc.status_code
    message = "request body is larger than this node accepts" if status == 413 else exc.detail
    code = _CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    return render(request, NodeError(status, code, message))


def handle_bad_text(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[Any]:
    # msgspec raises this (not a DecodeError) for bad UTF-8 inside a JSON string.
    return render(request, NodeError(400, "invalid_request", "the body is not valid UTF-8"))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The type only: exception text may quote the request, and prompts never reach logs.
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return render(request, NodeError(500, "internal_error", "internal error"))
