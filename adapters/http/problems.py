"""Errors at the HTTP boundary: problem JSON with stable codes, never a traceback."""

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import ResponseSpec

from adapters.outages import TRANSIENT
from domain.openai_errors import OpenAIErrorBody
from domain.ports import ConcurrencyConflict

log = logging.getLogger("b3iq.http")


class Problem(msgspec.Struct):
    status: int
    title: str
    detail: str
    code: str


class ProblemBody(msgspec.Struct):
    error: Problem


class ApiError(Exception):
    """An expected failure with a stable code, raised by handlers and services."""

    def __init__(
        self, status: int, code: str, title: str, detail: str = "", param: str | None = None
    ) -> None:
        super().__init__(detail or title)
        self.status, self.code, self.title, self.detail = status, code, title, detail or title
        self.param = param
        """The request field at fault, where there is one (OpenAI-shaped errors name it)."""


PROBLEM_JSON = "application/problem+json"


def problems(
    *statuses: int, body: type[msgspec.Struct] = ProblemBody, media_type: str = PROBLEM_JSON
) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of the error answers a route gives besides its success, so its
    schema names every status it can answer. 503 (the event log or the database is
    unreachable) is added: every route that documents errors depends on them."""
    return {
        status: ResponseSpec(
            body, description=_title(status), media_type=media_type, generate_examples=False
        )
        for status in sorted({*statuses, 503})
    }


def openai_problems(*statuses: int) -> dict[int, ResponseSpec]:
    """``problems`` for the OpenAI-compatible routes, which answer OpenAI's error shape."""
    return problems(*statuses, body=OpenAIErrorBody, media_type="application/json")


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response[ProblemBody]:
    return Response(
        ProblemBody(Problem(status, title, detail, code)),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def make_handlers(retry_after_s: int) -> dict[type[Exception], object]:
    def on_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[ProblemBody]:
        return problem(exc.status, exc.code, exc.title, exc.detail)

    def on_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[ProblemBody]:
        log.warning("dependency unavailable: %s", type(exc).__name__)
        return problem(
            503,
            "service_unavailable",
            "Service Unavailable",
            "the event log or the read-model database is unreachable; retry later",
            {"Retry-After": str(retry_after_s)},
        )

    def on_conflict(_: Request[Any, Any, Any], exc: Exception) -> Response[ProblemBody]:
        return problem(409, "concurrency_conflict", "Conflict", "concurrent update; retry")

    def on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ProblemBody]:
        return problem(400, "invalid_request", "Bad Request", str(exc.detail))

    def on_bad_text(_: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[ProblemBody]:
        # msgspec raises this (not a DecodeError) for bad UTF-8 inside a JSON string.
        return problem(400, "invalid_request", "Bad Request", "the body is not valid UTF-8")

    def on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ProblemBody]:
        code = "not_found" if isinstance(exc, NotFoundException) else "http_error"
        return problem(
            exc.status_code, code, _title(exc.status_code), str(exc.detail), dict(exc.headers or {})
        )

    def on_crash(_: Request[Any, Any, Any], exc: Exception) -> Response[ProblemBody]:
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        return problem(500, "internal_error", "Internal Server Error", "unexpected failure")

    handlers: dict[type[Exception], object] = {
        ApiError: on_api_error,
        ConcurrencyConflict: on_conflict,
        ValidationException: on_validation,
        UnicodeDecodeError: on_bad_text,
        HTTPException: on_http,
        Exception: on_crash,
    }
    for exc_type in TRANSIENT:
        handlers[exc_type] = on_unavailable
    return handlers


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
