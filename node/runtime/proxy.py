"""A runtime that forwards to an external OpenAI-compatible server (ollama, vLLM, ...)."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from node.errors import NodeError
from node.runtime.base import Completion, Message, SamplingParams
from node.runtime.queue import QueuedRuntime, QueueGauge


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Reply(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None


_reply = msgspec.json.Decoder(_Reply)


class ProxyRuntime(QueuedRuntime):
    def __init__(
        self,
        name: str,
        kind: str,
        base_url: str,
        *,
        upstream_model: str | None = None,
        max_queue: int = 64,
        parallel: int = 1,
        timeout_s: float = 600.0,
    ) -> None:
        self.name = name
        self.kind = kind
        self.base_url = base_url.rstrip("/")
        self.upstream_model = upstream_model or name
        self._gauge = QueueGauge(max_queue)
        self._slots = asyncio.Semaphore(parallel)
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self.failure: str | None = None

    async def start(self) -> None:
        await self.probe()

    async def probe(self) -> bool:
        try:
            response = await self._client.get(f"{self.base_url}/models", timeout=3.0)
            self.failure = None if response.status_code < 500 else "runtime not healthy"
        except httpx.HTTPError:
            self.failure = "runtime unreachable"
        return self.failure is None

    async def close(self) -> None:
        await self._client.aclose()

    def _payload(self, messages: list[Message], params: SamplingParams, stream: bool) -> Any:
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": stream,
        }
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _fail(self, exc: Exception) -> NodeError:
        self.failure = "runtime unreachable"
        return NodeError(
            503, "runtime_unavailable", f"{self.kind} runtime failed: {type(exc).__name__}"
        )

    async def complete(
        self, messages: list[Message], params: SamplingParams, arrived: float
    ) -> Completion:
        with self._gauge.slot(lambda: None):
            async with self._slots:
                started = time.perf_counter()
                try:
                    response = await self._client.post(
                        f"{self.base_url}/chat/completions",
                        json=self._payload(messages, params, stream=False),
                    )
                except httpx.HTTPError as exc:
                    raise self._fail(exc) from None
                if response.status_code >= 400:
                    raise NodeError(
                        503, "runtime_failed", f"upstream answered {response.status_code}"
                    )
                self.failure = None
                reply = _reply.decode(response.content)
        now = time.perf_counter()
        choice = reply.choices[0] if reply.choices else _Choice()
        usage = reply.usage or _Usage()
        return Completion(
            text=(choice.message.content if choice.message else None) or "",
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            queue_ms=(started - arrived) * 1000,
            ttft_ms=(now - arrived) * 1000,
            latency_ms=(now - arrived) * 1000,
        )

    async def stream(
        self, messages: list[Message], params: SamplingParams, arrived: float
    ) -> AsyncIterator[str | Completion]:
        with self._gauge.slot(lambda: None):
            async with self._slots:
                started = time.perf_counter()
                ttft, finish, usage = 0.0, "stop", _Usage()
                parts: list[str] = []
                try:
                    async with self._client.stream(
                        "POST",
                        f"{self.base_url}/chat/completions",
                        json=self._payload(messages, params, stream=True),
                    ) as response:
                        if response.status_code >= 400:
                            raise NodeError(
                                503, "runtime_failed", f"upstream answered {response.status_code}"
                            )
                        async for line in response.aiter_lines():
                            if not line.startswith("data:") or line.endswith("[DONE]"):
                                continue
                            reply = _reply.decode(line[5:].strip())
                            usage = reply.usage or usage
                            for choice in reply.choices:
                                finish = choice.finish_reason or finish
                                text = choice.delta.content if choice.delta else None
                                if text:
                                    parts.append(text)
                                    if not ttft:
                                        ttft = (time.perf_counter() - arrived) * 1000
                                    yield text
                except httpx.HTTPError as exc:
                    raise self._fail(exc) from None
                self.failure = None
        yield Completion(
            text="".join(parts),
            finish_reason=finish,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens or len(parts),
            queue_ms=(started - arrived) * 1000,
            ttft_ms=ttft,
            latency_ms=(time.perf_counter() - arrived) * 1000,
        )
