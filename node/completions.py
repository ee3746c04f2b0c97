"""One chat completion: checks, run on the model's runtime, signed receipt, response bodies."""

import re
import time
from collections.abc import AsyncIterator

from domain.ids import uuid7
from node.api.schemas import (
    AssistantMessage,
    B3iqInfo,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChunkChoice,
    Delta,
    UsageOut,
)
from node.errors import NodeError, invalid_request
from node.receipts import Receipt, Timings, Usage, digest, issue_receipt
from node.runtime.base import Completion, Message, Runtime, SamplingParams
from node.services import NodeServices

_TOKEN_ID = re.compile(r"-?[0-9]{1,10}")


def _text_of(message: ChatMessageIn, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise invalid_request(
                f"content part type {part.type!r} is not supported; send text",
                param=f"messages[{index}].content",
            )
        texts.append(part.text)
    return "".join(texts)


def to_messages(request: ChatCompletionRequest) -> list[Message]:
    return [
        Message("system" if m.role == "developer" else m.role, _text_of(m, i))
        for i, m in enumerate(request.messages)
    ]


def to_params(request: ChatCompletionRequest) -> SamplingParams:
    if request.n is not None and request.n > 1:
        raise invalid_request("n > 1 is not supported; send one request per choice", param="n")
    stop = request.stop
    bias: dict[int, float] = {}
    for token, value in (request.logit_bias or {}).items():
        if not _TOKEN_ID.fullmatch(token):  # not isdigit(): "²" and "--1" are not ints
            raise invalid_request(f"logit_bias key {token!r} is not a token id", "logit_bias")
        bias[int(token)] = value
    return SamplingParams(
        max_tokens=request.max_completion_tokens or request.max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        seed=request.seed,
        logit_bias=bias,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
    )


class CompletionService:
    def __init__(self, services: NodeServices, dispatch_id: str | None = None) -> None:
        self._s = services
        self._dispatch_id = dispatch_id
        """Routed work: the control plane's id for it, which the receipt names."""
        self.receipt: Receipt | None = None
        """The signed receipt of this service's completion, once it has finished."""

    def runtime(self, model: str) -> Runtime:
        runtime = self._s.runtimes.get(model)
        if runtime is None:
            raise NodeError(
                404, "model_not_found", f"model {model!r} does not exist here", param="model"
            )
        return runtime

    def _receipt(
        self,
        request: ChatCompletionRequest,
        runtime: Runtime,
        result: Completion,
        text: str,
        stream: bool,
    ) -> Receipt:
        receipt = issue_receipt(
            self._s.identity.signer,
            node_id=self._s.identity.node_id,
            model=request.model,
            runtime_kind=runtime.kind,
            stream=stream,
            finish_reason=result.finish_reason,
            usage=Usage(
                result.prompt_tokens,
                result.completion_tokens,
                result.prompt_tokens + result.completion_tokens,
            ),
            timings=Timings(
                queue_us=round(result.queue_ms * 1000),
                ttft_us=round(result.ttft_ms * 1000),
                latency_us=round(result.latency_ms * 1000),
            ),
            request_digest=digest(request),
            response_digest=digest({"content": text, "finish_reason": result.finish_reason}),
            dispatch_id=self._dispatch_id,
        )
        self._s.receipts.add(receipt)
        self.receipt = receipt
        m = self._s.metrics
        m.tokens.labels(request.model, "prompt").inc(result.prompt_tokens)
        m.tokens.labels(request.model, "completion").inc(result.completion_tokens)
        m.latency.labels(request.model).observe(result.latency_ms / 1000)
        m.ttft.labels(request.model).observe(result.ttft_ms / 1000)
        return receipt

    async def complete(
        self, request: ChatCompletionRequest, runtime: Runtime, arrived: float
    ) -> ChatCompletion:
        result = await runtime.complete(to_messages(request), to_params(request), arrived)
        receipt = self._receipt(request, runtime, result, result.text, stream=False)
        return ChatCompletion(
            id=f"chatcmpl-{uuid7()}",
            created=int(time.time()),
            model=request.model,
            choices=[
                Choice(message=AssistantMessage(result.text), finish_reason=result.finish_reason)
            ],
            usage=_usage(result),
            b3iq=_info(runtime, result, receipt),
        )

    async def stream(
        self, request: ChatCompletionRequest, runtime: Runtime, arrived: float
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks in OpenAI's order: the role (with the first text), content deltas, the
        finish (with the last text), then usage if asked. A client pays for every event it
        parses, so role and finish ride on content chunks instead of chunks of their own."""
        deltas = runtime.stream(to_messages(request), to_params(request), arrived)
        first = await anext(deltas)  # errors before the first token still get a status code
        return self._chunks(request, runtime, first, deltas)

    async def _chunks(
        self,
        request: ChatCompletionRequest,
        runtime: Runtime,
        first: str | Completion,
        deltas: AsyncIterator[str | Completion],
    ) -> AsyncIterator[ChatCompletionChunk]:
        ident, created, model = f"chatcmpl-{uuid7()}", int(time.time()), request.model
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=ident,
                created=created,
                model=model,
                choices=[ChunkChoice(delta=delta, finish_reason=finish)],
            )

        role: str | None = "assistant"
        sent = 0
        item = first
        while isinstance(item, str):
            yield chunk(Delta(content=item, role=role))
            role, sent = None, sent + len(item)
            item = await anext(deltas)
        result = item
        receipt = self._receipt(request, runtime, result, result.text, stream=True)
        rest = result.text[sent:]
        yield chunk(Delta(content=rest or ("" if role else None), role=role), result.finish_reason)
        info = _info(runtime, result, receipt)
        if include_usage:
            yield ChatCompletionChunk(
                id=ident, created=created, model=model, choices=[], usage=_usage(result), b3iq=info
            )
        await deltas.aclose()  # type: ignore[attr-defined]


def _usage(result: Completion) -> UsageOut:
    return UsageOut(
        result.prompt_tokens,
        result.completion_tokens,
        result.prompt_tokens + result.completion_tokens,
    )


def _info(runtime: Runtime, result: Completion, receipt: Receipt) -> B3iqInfo:
    return B3iqInfo(
        runtime_kind=runtime.kind,
        latency_ms=round(result.latency_ms, 3),
        ttft_ms=round(result.ttft_ms, 3),
        receipt_hash=receipt.receipt_hash,
    )
