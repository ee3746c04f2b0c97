"""POST /v1/chat/completions, answered ahead of the framework.

A paid request's own work in this process is a fraction of a millisecond; the framework's
routing, dependency injection and response pipeline added about as much again, on the
latency the gateway promises to keep under a millisecond (ops/bench/bench_gateway.py). So
this route is served here as plain ASGI, by the same Gateway, with the same OpenAI-shaped
errors as GatewayController, where the route is also defined for the OpenAPI schema.
"""

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from litestar.types import ASGIApp
from prometheus_client import Counter, Histogram

from adapters.gateway import Completed, Gateway, Streaming
from adapters.http import sse
from adapters.http.bearer import bearer_token
from adapters.http.plain_asgi import App, Receive, Scope, Send, read_body, respond
from adapters.http.problems import ApiError
from adapters.outages import TRANSIENT
from domain.openai_errors import openai_error

log = logging.getLogger("b3iq.gateway")

PATH = "/v1/chat/completions"
MAX_BODY_BYTES = 10_000_000
"""The framework's own default limit, which the route had before."""
MAX_IDEMPOTENCY_KEY = 256
REQUESTS = Counter(
    "b3iq_gateway_chat_requests_total", "Hosted chat requests, by HTTP status", ["status"]
)
SECONDS = Histogram(
    "b3iq_gateway_chat_seconds",
    "Hosted chat requests: arrival to the answer (a stream: to its first event)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    *((k.lower().encode(), v.encode()) for k, v in sse.HEADERS.items()),
]
_JSON = b"application/json"


class ChatRoute:
    def __init__(self, app: ASGIApp | App, gateway: Gateway) -> None:
        self._app = app
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self._app(scope, receive, send)  # type: ignore[arg-type]
            return
        started = time.perf_counter()
        status = 200
        try:
            outcome = await self._outcome(scope, receive)
        except Exception as exc:
            status = await _error(send, failure(exc))
        else:
            if isinstance(outcome, Completed):
                await respond(send, 200, _JSON, outcome.body)
            else:
                await send({"type": "http.response.start", "status": 200,
                            "headers": _STREAM_HEADERS})  # fmt: skip
                SECONDS.observe(time.perf_counter() - started)
                REQUESTS.labels("200").inc()
                await _stream(outcome.events, receive, send)
                return
        SECONDS.observe(time.perf_counter() - started)
        REQUESTS.labels(str(status)).inc()

    async def _outcome(self, scope: Scope, receive: Receive) -> Completed | Streaming:
        authorization = idempotency_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
        body = functools.partial(read_body, receive, MAX_BODY_BYTES)
        return await paid_chat(self._gateway, authorization, idempotency_key, body)


async def paid_chat(
    gateway: Gateway,
    authorization: str | None,
    idempotency_key: str | None,
    body: Callable[[], Awaitable[bytes]],
) -> Completed | Streaming:
    """The request's checks in their order (the key, then the Idempotency-Key, then the
    body, read only then), and the gateway's outcome: here and in GatewayController."""
    principal = await gateway.principal(bearer_token(authorization))
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, "invalid_request", "Bad Request", "Idempotency-Key: 1-256 chars")
    return await gateway.chat(principal, await body(), idempotency_key)


def failure(exc: Exception) -> ApiError:
    """What a hosted request that raised ``exc`` answers, in OpenAI's shape (here and in
    GatewayController). Only the type is logged: an exception's text may quote a prompt."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnicodeDecodeError):
        return ApiError(400, "invalid_request", "Bad Request", "the body is not valid UTF-8")
    if isinstance(exc, TRANSIENT):
        log.warning("dependency unavailable: %s", type(exc).__name__)
        return ApiError(503, "service_unavailable", "Service Unavailable", "retry later")
    log.error("unhandled %s", type(exc).__name__)
    return ApiError(500, "internal_error", "Internal Server Error", "unexpected failure")


def retries_after(status: int) -> bool:
    """Whether the answer tells the client to come back in a second."""
    return status in (429, 503)


async def _error(send: Send, failed: ApiError) -> int:
    status = failed.status
    body = openai_error(status, failed.code, failed.title, failed.detail, failed.param)
    retry = [(b"retry-after", b"1")] if retries_after(status) else None
    await respond(send, status, _JSON, msgspec.json.encode(body), retry)
    return status


async def _stream(events: AsyncIterator[bytes], receive: Receive, send: Send) -> None:
    """The events as they come; a client that leaves stops the stream (whose cleanup
    releases the hold), as the framework's streaming response did."""

    async def pump() -> None:
        async for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def left() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping, watching = asyncio.ensure_future(pump()), asyncio.ensure_future(left())
    try:
        await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        pumping.cancel()  # at once: inside the events, it stops them there
        watching.cancel()
        failed = await asyncio.gather(pumping, watching, return_exceptions=True)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if isinstance(failed[0], Exception):  # headers are out: the connection just ends
        log.error("stream failed: %s", type(failed[0]).__name__)
