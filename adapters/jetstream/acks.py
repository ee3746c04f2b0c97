"""Reading JetStream publish acknowledgements from raw replies.

We parse replies ourselves instead of using nats-py's publish helpers: its pipelined
``publish_async`` never resolves a future the server rejected (nats.py #985), and its
``publish`` cannot read the empty acks of atomic-batch messages.
"""

from typing import NamedTuple

import msgspec

from adapters.jetstream.client import status_of

WRONG_LAST_SEQUENCE = 10071
DUPLICATE_IN_BATCH = 10201


class Ack(NamedTuple):
    stream: str
    seq: int
    duplicate: bool


class PublishRejected(Exception):
    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code


class NoStreamResponders(Exception):
    """Nobody answered for the subject's stream: the server is down or the stream is gone."""


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Reply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_reply_decoder = msgspec.json.Decoder(_Reply)


def parse_ack(data: bytes, headers: bytes | None) -> Ack:
    """A publish's reply, as it arrived (payload and header block)."""
    if not data:
        status = status_of(headers)
        if status == "503":
            raise NoStreamResponders
        raise PublishRejected(int(status or 0), 0, f"empty publish reply, status {status}")
    reply = _reply_decoder.decode(data)
    if reply.error is not None:
        raise PublishRejected(reply.error.code, reply.error.err_code, reply.error.description)
    return Ack(reply.stream, reply.seq, reply.duplicate)
