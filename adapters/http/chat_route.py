"""POST /v1/chat/completions, answered ahead of the framework.

A paid request's own work in this process is a fraction of a millisecond; the framework's
routing, dependency injection and response pipeline added about as much again, on the
latency the gateway promises to keep under a millisecond (ops/bench/bench_gateway.py). So
this route is served here as plain ASGI, by the same Gateway, with the same OpenAI-shaped
errors as GatewayController, where the route is also defined for the OpenAPI schema.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import msgspec
from litestar.types import ASGIApp
from prometheus_client import Counter, Histogram

from adapters.gateway import Completed, Gateway, Streaming
from adapters.http import sse
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
        except ApiError as exc:
            status = await _error(send, exc.status, exc.code, exc.title, exc.detail, exc.param)
        except UnicodeDecodeError:
            status = await _error(send, 400, "invalid_request", "Bad Request", "not UTF-8")
        except TRANSIENT as exc:
            log.warning("dependency unavailable: %s", type(exc).__name__)
            status = await _error(send, 503, "service_unavailable", "Service Unavailable",
                                  "retry later")  # fmt: skip
        except Exception as exc:  # the type only: its text may quote a prompt
            log.error("unhandled %s", type(exc).__name__)
            status = await _error(send, 500, "internal_error", "Internal Server Error",
                                  "unexpected failure")  # fmt: skip
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
        principal = await self._gateway.principal(_bearer(authorization))
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise ApiError(400, "invalid_request", "Bad Request", "Idempotency-Key: 1-256 chars")
        body = await read_body(receive, MAX_BODY_BYTES)
        return await self._gateway.chat(principal, body, idempotency_key)


def _bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _error(  # noqa: PLR0917
    send: Send, status: int, code: str, title: str, detail: str, param: str | None = None
) -> int:
    body = msgspec.json.encode(openai_error(status, code, title, detail, param))
    retry = [(b"retry-after", b"1")] if status in (429, 503) else None
    await respond(send, status, _JSON, body, retry)
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
