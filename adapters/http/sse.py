"""Server-sent events as OpenAI streams them: `data: <json>` frames, then `data: [DONE]`."""

from dataclasses import dataclass

import msgspec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from domain.broker_frames import Failed

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def event(data: bytes | msgspec.Raw) -> bytes:
    return b"data: " + data + b"\n\n"


def in_stream_error(frame: Failed) -> bytes:
    """Too late for a status code once the stream began: OpenAI's in-stream error."""
    error = {"error": {"message": frame.message, "type": "api_error", "code": frame.code}}
    return event(msgspec.json.encode(error))


@dataclass
class JsonOrStream(Operation):
    """The OpenAPI operation of a chat route: its 200 is JSON, or an event stream when the
    request asked to stream."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            stream = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
            ok.content = {**(ok.content or {}), "text/event-stream": stream}


@dataclass
class ChatPassThrough(JsonOrStream):
    """``JsonOrStream`` for a route that reads its body itself and passes it on: the
    schema still says a JSON object (a chat completion request) is expected."""

    def __post_init__(self) -> None:
        super().__post_init__()
        body = OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))
        self.request_body = RequestBody(content={"application/json": body}, required=True)
