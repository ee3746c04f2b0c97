"""One model, many clients: queued not interleaved, no broken streams, disconnects free the slot."""

import asyncio
import contextlib
import time

import httpx
import openai
import pytest

from node.runtime import llama
from tests.e2e.node.conftest import NO_END, Node

HELLO = [{"role": "user", "content": "hello"}]


async def test_eight_concurrent_streams_all_complete(node: Node) -> None:
    client = openai.AsyncOpenAI(base_url=f"{node.url}/v1", api_key=node.key, max_retries=0)

    async def one() -> int:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=HELLO,
            max_tokens=32,
            logit_bias=NO_END,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [c.usage async for c in stream if c.usage]
        return usage[0].completion_tokens

    assert await asyncio.gather(*(one() for _ in range(8))) == [32] * 8
    await client.close()


def test_client_disconnect_mid_stream_frees_the_slot(node: Node) -> None:
    runtime = node.services.runtimes["tiny"]
    body = {
        "model": "tiny",
        "messages": HELLO,
        "max_tokens": 400,
        "logit_bias": NO_END,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {node.key}"}
    with (
        httpx.Client() as client,
        client.stream("POST", f"{node.url}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        next(r.iter_lines())
    deadline = time.monotonic() + 5
    while runtime.queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.queue_depth == 0
    reply = httpx.post(
        f"{node.url}/v1/chat/completions",
        json={"model": "tiny", "messages": HELLO, "max_tokens": 2},
        headers=headers,
    )
    assert reply.status_code == 200


def test_client_leaving_a_plain_call_stops_its_generation(node: Node) -> None:
    """No receipt means the generation was cancelled, not finished for nobody."""
    receipts = node.services.receipts.count()
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 480, "logit_bias": NO_END}
    headers = {"Authorization": f"Bearer {node.key}"}
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(f"{node.url}/v1/chat/completions", json=body, headers=headers, timeout=0.005)
    runtime = node.services.runtimes["tiny"]
    deadline = time.monotonic() + 5
    while runtime.queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.queue_depth == 0
    assert node.services.receipts.count() == receipts


def test_a_stream_ends_with_its_generation_not_at_the_next_flush(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens after the first gather for up to one flush interval before they are sent; the
    generation ending must cut that wait short, or every stream ends up to an interval late."""
    monkeypatch.setattr(llama, "STREAM_FLUSH_INTERVAL_S", 30.0)
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=node.key, max_retries=0)
    started = time.monotonic()
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=400,  # still generating when the first token is sent
            logit_bias=NO_END,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert time.monotonic() - started < 10
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [400]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
