"""GET /v1/broker/connect: the WebSocket a managed node dials out to, as plain ASGI.

The upgrade request is a signed node request (the same scheme as every node call, body
empty), checked before the connection is accepted; a refusal is an HTTP problem response
where the server supports it. After that the connection is the node's broker route.
"""

import asyncio
import contextlib
import logging

import msgspec

from adapters.broker import Broker
from adapters.http.plain_asgi import Receive, Scope, Send
from adapters.http.problems import ApiError, Problem, ProblemBody
from adapters.node_auth import NodeAuthenticator
from adapters.outages import TRANSIENT
from adapters.route_connection import NodeConnection
from domain.broker_frames import BROKER_PATH, from_node
from domain.node_requests import NODE_ID
from domain.nodes import ENROLLED

log = logging.getLogger("b3iq.broker")

_encoder = msgspec.json.Encoder()


async def serve_socket(
    scope: Scope, receive: Receive, send: Send, broker: Broker, auth: NodeAuthenticator
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        node_id = headers.get(NODE_ID, "")
        known = await auth.authenticate(node_id, "GET", BROKER_PATH, headers, b"")
        if known.state.status != ENROLLED:
            raise ApiError(403, "forbidden", "Forbidden", f"the node is {known.state.status}")
    except ApiError as exc:
        await _deny(scope, send, exc)
        return
    except TRANSIENT as exc:
        log.warning("dependency unavailable: %s", type(exc).__name__)
        unavailable = ApiError(503, "service_unavailable", "Service Unavailable", "retry later")
        await _deny(scope, send, unavailable)
        return
    await send({"type": "websocket.accept"})

    async def send_bytes(data: bytes) -> None:
        await send({"type": "websocket.send", "bytes": data})

    conn = NodeConnection(node_id, known.signed.key_id, send_bytes)
    reader = asyncio.create_task(_read(receive, conn))
    try:
        await broker.attach(conn)
        closed = asyncio.create_task(conn.closed.wait())
        await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
    finally:
        reader.cancel()
        await broker.detach(conn)
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": 1000})


async def _read(receive: Receive, conn: NodeConnection) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            # 1012 (service restart): this server is shutting down, not the node leaving.
            conn.close("shutdown" if message.get("code") == 1012 else "node_closed")
            return
        data = message.get("bytes") or (message.get("text") or "").encode()
        try:
            conn.deliver(from_node.decode(data))
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            log.warning("undecodable frame from node %s", conn.node_id)


async def _deny(scope: Scope, send: Send, refusal: ApiError) -> None:
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 4000 + refusal.status})
        return
    status = refusal.status
    problem = Problem(status, refusal.title, refusal.detail, refusal.code)
    body = _encoder.encode(ProblemBody(problem))
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


class BrokerEntrance:
    """Takes the broker's WebSocket path off the app, in front of the framework."""

    def __init__(self, app: object, broker: Broker, auth: NodeAuthenticator) -> None:
        self._app = app
        self._broker = broker
        self._auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path") == BROKER_PATH:
            await serve_socket(scope, receive, send, self._broker, self._auth)
            return
        await self._app(scope, receive, send)  # type: ignore[operator]
