"""What travels over a node's broker connection: one JSON object per WebSocket message.

The control plane sends ``dispatch`` (an OpenAI chat request for the node to run),
``cancel`` and ``ping``; the node answers with ``chunk`` (one streamed
chat.completion.chunk), then ``done`` (the whole response when not streaming, and the
signed receipt) or ``error``, and ``pong``. Requests and responses travel as raw JSON:
the broker never decodes what it only passes on.
"""

import msgspec

from domain.receipts import Receipt

BROKER_PATH = "/v1/broker/connect"
"""Where a node dials its broker WebSocket (the upgrade is a signed GET of this path)."""


class Dispatch(msgspec.Struct, frozen=True, tag="dispatch"):
    id: str
    request: msgspec.Raw
    """The chat completion request body, as the node's own API would take it."""


class Cancel(msgspec.Struct, frozen=True, tag="cancel"):
    id: str


class Ping(msgspec.Struct, frozen=True, tag="ping"):
    id: str


class Chunk(msgspec.Struct, frozen=True, tag="chunk"):
    id: str
    data: msgspec.Raw
    """One chat.completion.chunk."""


_NULL = msgspec.Raw(b"null")


class Done(msgspec.Struct, frozen=True, tag="done"):
    id: str
    receipt: Receipt
    response: msgspec.Raw = _NULL
    """The chat.completion when the request did not stream, else JSON null (msgspec
    cannot decode a Raw inside a union, so "absent" is a null)."""

    @property
    def streamed(self) -> bool:
        return bytes(self.response) == b"null"


class Failed(msgspec.Struct, frozen=True, tag="error"):
    id: str
    status: int
    code: str
    message: str


class Pong(msgspec.Struct, frozen=True, tag="pong"):
    id: str


ToNode = Dispatch | Cancel | Ping
FromNode = Chunk | Done | Failed | Pong
Reply = Chunk | Done | Failed
"""What answers a dispatch."""

encode = msgspec.json.Encoder().encode
to_node = msgspec.json.Decoder(ToNode)
from_node = msgspec.json.Decoder(FromNode)
