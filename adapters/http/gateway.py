"""The hosted OpenAI-compatible endpoints, for customers holding a gateway key.

Errors here are OpenAI's shape with the `b3iq` block (PRODUCT.md §7), so the official
client and every OpenAI-compatible tool reads them; the rest of the API answers problems.
"""

import logging
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Stream

from adapters.bootstrap import ControlPlane
from adapters.gateway import Completed
from adapters.http import sse
from adapters.http.chat_route import MAX_IDEMPOTENCY_KEY
from adapters.http.problems import ApiError, openai_problems
from adapters.outages import TRANSIENT
from domain.openai_errors import openai_error

log = logging.getLogger("b3iq.gateway")


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    created: int
    object: str = "model"
    owned_by: str = "b3iq"


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"


def bearer(request: Request[Any, Any, Any]) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _openai(
    status: int, code: str, title: str, detail: str, param: str | None = None
) -> Response[Any]:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return Response(
        openai_error(status, code, title, detail, param), status_code=status, headers=headers
    )


def on_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _openai(exc.status, exc.code, exc.title, exc.detail, exc.param)


def on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return _openai(400, "invalid_request", "Bad Request", str(exc.detail))
    code = "request_too_large" if exc.status_code == 413 else "invalid_request"
    return _openai(exc.status_code, code, "Error", str(exc.detail))


def on_bad_text(_: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[Any]:
    return _openai(400, "invalid_request", "Bad Request", "the body is not valid UTF-8")


def on_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("dependency unavailable: %s", type(exc).__name__)
    return _openai(503, "service_unavailable", "Service Unavailable", "retry later")


def on_crash(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled %s", type(exc).__name__)  # the type only: text may quote a prompt
    return _openai(500, "internal_error", "Internal Server Error", "unexpected failure")


class GatewayController(Controller):
    tags = ["gateway"]
    exception_handlers = {
        ApiError: on_api_error,
        HTTPException: on_http,
        UnicodeDecodeError: on_bad_text,
        **dict.fromkeys(TRANSIENT, on_unavailable),
        Exception: on_crash,
    }

    @get(
        "/v1/models",
        summary="Models servable now: an eligible node with fresh observed evidence",
        responses=openai_problems(401, 403),
    )
    async def models(
        self, plane: NamedDependency[ControlPlane], request: Request[Any, Any, Any]
    ) -> ModelList:
        await plane.gateway.principal(bearer(request))
        servable = await plane.gateway.models()
        return ModelList([ModelCard(model, int(at.timestamp())) for model, at in servable])

    @post(
        "/v1/chat/completions",
        summary="A paid chat completion, routed to an eligible node (streams pass through)",
        status_code=200,
        responses=openai_problems(400, 401, 402, 403, 404, 409, 413, 429, 502),
        operation_class=sse.ChatPassThrough,
    )
    async def chat(
        self, plane: NamedDependency[ControlPlane], request: Request[Any, Any, Any]
    ) -> Response[Any] | Stream:
        # Served by ChatRoute ahead of the framework (see there); defined here for the
        # OpenAPI schema, and for an app built without that route, with the same answers.
        principal = await plane.gateway.principal(bearer(request))
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise ApiError(400, "invalid_request", "Bad Request", "Idempotency-Key: 1-256 chars")
        outcome = await plane.gateway.chat(principal, await request.body(), idempotency_key)
        if isinstance(outcome, Completed):
            return Response(outcome.body, media_type="application/json")
        return Stream(outcome.events, media_type="text/event-stream", headers=sse.HEADERS)
