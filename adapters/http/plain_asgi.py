"""The little that routes served ahead of the framework need: ASGI's shapes, a bounded
body read and a whole response."""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from adapters.http.problems import ApiError

# Plain ASGI shapes: the framework's TypedDicts are for its own handlers.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
"""A route served ahead of the framework, or what it hands the rest to."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; ApiError 413 past ``limit`` bytes, 400 if the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "invalid_request", "Bad Request", "client disconnected")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "request_too_large", "Payload Too Large", f"body over {limit:,} bytes"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    media_type: bytes,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
