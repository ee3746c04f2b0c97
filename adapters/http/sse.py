"""Server-sent events as OpenAI streams them: `data: <json>` frames, then `data: [DONE]`."""

import msgspec

from domain.broker_frames import Failed

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def event(data: bytes | msgspec.Raw) -> bytes:
    return b"data: " + data + b"\n\n"


def in_stream_error(frame: Failed) -> bytes:
    """Too late for a status code once the stream began: OpenAI's in-stream error."""
    error = {"error": {"message": frame.message, "type": "api_error", "code": frame.code}}
    return event(msgspec.json.encode(error))
