"""The hosted OpenAI-compatible endpoints, for customers holding a gateway key.

Errors here are OpenAI's shape with the `b3iq` block (PRODUCT.md §7), so the official
client and every OpenAI-compatible tool reads them; the rest of the API answers problems.
"""

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Stream

from adapters.bootstrap import ControlPlane
from adapters.gateway import Completed
from adapters.http import sse
from adapters.http.bearer import bearer_token
from adapters.http.chat_route import failure, paid_chat, retries_after
from adapters.http.problems import ApiError, openai_problems
from adapters.outages import TRANSIENT
from domain.openai_errors import openai_error


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    created: int
    object: str = "model"
    owned_by: str = "b3iq"


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"


def _openai(
    status: int, code: str, title: str, detail: str, param: str | None = None
) -> Response[Any]:
    headers = {"Retry-After": "1"} if retries_after(status) else None
    return Response(
        openai_error(status, code, title, detail, param), status_code=status, headers=headers
    )


def on_failure(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    failed = failure(exc)
    return _openai(failed.status, failed.code, failed.title, failed.detail, failed.param)


def on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return _openai(400, "invalid_request", "Bad Request", str(exc.detail))
    code = "request_too_large" if exc.status_code == 413 else "invalid_request"
    return _openai(exc.status_code, code, "Error", str(exc.detail))


class GatewayController(Controller):
    tags = ["gateway"]
    exception_handlers = {
        HTTPException: on_http,
        **dict.fromkeys((ApiError, UnicodeDecodeError, *TRANSIENT, Exception), on_failure),
    }

    @get(
        "/v1/models",
        summary="Models servable now: an eligible node with fresh observed evidence",
        responses=openai_problems(401, 403),
    )
    async def models(
        self, plane: NamedDependency[ControlPlane], request: Request[Any, Any, Any]
    ) -> ModelList:
        await plane.gateway.principal(bearer_token(request.headers.get("authorization")))
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
        authorization, key = (request.headers.get(h) for h in ("authorization", "idempotency-key"))
        outcome = await paid_chat(plane.gateway, authorization, key, request.body)
        if isinstance(outcome, Completed):
            return Response(outcome.body, media_type="application/json")
        return Stream(outcome.events, media_type="text/event-stream", headers=sse.HEADERS)
