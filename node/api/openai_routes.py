"""The OpenAI-compatible local API under /v1."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.params import FromQuery, JSONBody
from litestar.response import Stream

from adapters.http.sse import JsonOrStream
from node.api.auth import local_key, require_local_key, services_of
from node.api.errors import documented
from node.api.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
)
from node.catalog import ModelProfile
from node.completions import CompletionService
from node.errors import NodeError
from node.keys import require_scope
from node.managed.receipt_outbox import Queued
from node.managed.submission import OptionalBody, SubmitReceipts, queue_for_control_plane
from node.receipts import Receipt

_sse = msgspec.json.Encoder()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ProfileList(msgspec.Struct, frozen=True):
    data: list[ModelProfile]
    object: str = "list"


class ReceiptList(msgspec.Struct, frozen=True):
    data: list[Receipt]
    node_id: str
    public_key: str
    object: str = "list"


@get(
    "/v1/models",
    before_request=require_local_key,
    opt={"scope": "models"},
    sync_to_thread=False,
    responses=documented(401, 403),
)
def list_models(request: Request[Any, Any, Any]) -> ModelList:
    services, key = services_of(request), local_key(request)
    created = int(services.started_at)
    return ModelList(
        [
            ModelCard(id=name, created=created)
            for name in services.runtimes
            if key.allows_model(name)
        ]
    )


async def _cancel_on_disconnect(request: Request[Any, Any, Any], task: asyncio.Task[Any]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    task.cancel()


@post(
    "/v1/chat/completions",
    before_request=require_local_key,
    opt={"scope": "chat"},
    status_code=200,
    responses=documented(400, 401, 403, 404, 413, 429, 503),
    operation_class=JsonOrStream,
)
async def chat_completions(
    request: Request[Any, Any, Any], data: JSONBody[ChatCompletionRequest]
) -> ChatCompletion | Stream:
    arrived = time.perf_counter()
    services = services_of(request)
    require_scope(local_key(request), "chat", data.model)
    service = CompletionService(services)
    runtime = service.runtime(data.model)
    if data.stream:
        chunks = await service.stream(data, runtime, arrived)
        return Stream(_sse_events(chunks), media_type="text/event-stream", headers=SSE_HEADERS)
    # The client leaving cancels this handler, and with it the generation: the model's
    # slot goes to the next request instead of finishing for nobody.
    handler = asyncio.current_task()
    assert handler is not None
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, handler))
    try:
        return await service.complete(data, runtime, arrived)
    except asyncio.CancelledError:
        if not watcher.done():
            raise
        raise NodeError(499, "client_closed_request", "client closed the request") from None
    finally:
        watcher.cancel()


async def _sse_events(chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield b"data: " + _sse.encode(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


@get(
    "/v1/model-profiles",
    before_request=require_local_key,
    opt={"scope": "profiles"},
    sync_to_thread=False,
    responses=documented(401, 403),
)
def model_profiles(request: Request[Any, Any, Any]) -> ProfileList:
    key = local_key(request)
    return ProfileList([p for p in services_of(request).profiles() if key.allows_model(p.model)])


@get(
    "/v1/receipts",
    before_request=require_local_key,
    opt={"scope": "receipts"},
    sync_to_thread=False,
    responses=documented(400, 401, 403),
)
def list_receipts(request: Request[Any, Any, Any], limit: FromQuery[int] = 50) -> ReceiptList:
    services = services_of(request)
    limit = max(1, min(limit, 500))
    return ReceiptList(
        data=services.receipts.recent(limit),
        node_id=services.identity.node_id,
        public_key=services.identity.public_key_hex,
    )


@post(
    "/v1/receipts/submit",
    before_request=require_local_key,
    opt={"scope": "receipts"},
    status_code=202,
    sync_to_thread=False,
    responses=documented(400, 401, 403, 404, 409, 413),
    operation_class=OptionalBody,
)
def submit_receipts(
    request: Request[Any, Any, Any], data: JSONBody[SubmitReceipts | None] = None
) -> Queued:
    return queue_for_control_plane(services_of(request), data)


ROUTES = [list_models, chat_completions, model_profiles, list_receipts, submit_receipts]
