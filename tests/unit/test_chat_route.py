"""The hosted chat route ahead of the framework: the gateway's answers, OpenAI's error
shape, and a stream that stops when its client leaves."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapters.gateway import Completed, Streaming
from adapters.http.chat_route import MAX_BODY_BYTES, ChatRoute
from adapters.http.problems import ApiError
from domain.ports import StoreUnavailable
from tests.support import framework


class FakeGateway:
    def __init__(self) -> None:
        self.calls: list[tuple[object, bytes, str | None]] = []
        self.outcome: Completed | Streaming = Completed(b'{"id":"chatcmpl-1"}')
        self.failure: BaseException | None = None

    async def principal(self, secret: str | None) -> str:
        if secret != "b3iq_gateway_ok":
            raise ApiError(401, "unauthorized", "Unauthorized", "the gateway API key is not valid")
        return "principal"

    async def chat(self, principal: object, raw: bytes, key: str | None) -> Completed | Streaming:
        self.calls.append((principal, raw, key))
        if self.failure is not None:
            raise self.failure
        return self.outcome


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(gateway: FakeGateway) -> httpx.AsyncClient:
    route = ChatRoute(framework, gateway)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(route), base_url="http://cp")


AUTH = {"authorization": "Bearer b3iq_gateway_ok"}


async def test_a_completion_is_the_gateways_answer(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    response = await client.post(
        "/v1/chat/completions", content=b'{"model":"m"}', headers={**AUTH, "Idempotency-Key": "k1"}
    )
    assert (response.status_code, response.json()) == (200, {"id": "chatcmpl-1"})
    assert response.headers["content-type"] == "application/json"
    assert gateway.calls == [("principal", b'{"model":"m"}', "k1")]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/chat/completions"), ("POST", "/v1/models")]
)
async def test_everything_else_goes_on_to_the_framework(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert (response.status_code, response.text) == (299, f"framework {method} {path}")


@pytest.mark.parametrize(
    ("failure", "status", "code", "retry_after"),
    [
        (ApiError(402, "insufficient_balance", "Payment Required", "short"), 402,
         "insufficient_balance", None),
        (StoreUnavailable("nats://x"), 503, "service_unavailable", "1"),
        (RuntimeError("the prompt was: secret"), 500, "internal_error", None),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), 400, "invalid_request", None),
    ],
)  # fmt: skip
async def test_failures_answer_openais_error_shape_and_never_quote_the_request(
    client: httpx.AsyncClient,
    gateway: FakeGateway,
    failure: Exception,
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    gateway.failure = failure
    response = await client.post("/v1/chat/completions", content=b"{}", headers=AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["b3iq"]["status"]) == (code, status)
    assert response.headers.get("retry-after") == retry_after
    assert "secret" not in response.text


async def test_the_key_is_checked_first_then_the_idempotency_key_then_the_body(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    missing = await client.post("/v1/chat/completions", content=b"{}")
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    long_key = await client.post(
        "/v1/chat/completions", content=b"{}", headers={**AUTH, "Idempotency-Key": "k" * 257}
    )
    assert long_key.status_code == 400
    huge = await client.post(
        "/v1/chat/completions", content=b"x" * (MAX_BODY_BYTES + 1), headers=AUTH
    )
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "request_too_large")
    assert gateway.calls == []


async def test_a_stream_passes_its_events_through(
    client: httpx.AsyncClient, gateway: FakeGateway
) -> None:
    async def events() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    gateway.outcome = Streaming(events())
    response = await client.post("/v1/chat/completions", content=b"{}", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.text == "data: 1\n\ndata: [DONE]\n\n"


async def test_a_client_that_leaves_stops_the_stream_and_its_cleanup_runs(
    gateway: FakeGateway,
) -> None:
    cleaned = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await asyncio.Event().wait()  # a node that never finishes
            yield b"never"
        finally:
            cleaned.set()  # the gateway releases the hold here

    gateway.outcome = Streaming(events())
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]
    first_event = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await first_event.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body"):
            first_event.set()

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"authorization", b"Bearer b3iq_gateway_ok")]}  # fmt: skip
    route = ChatRoute(framework, gateway)  # type: ignore[arg-type]
    await asyncio.wait_for(route(scope, receive, send), 5)
    assert cleaned.is_set()
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n"]
