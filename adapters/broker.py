"""The broker: nodes' outbound connections, and inference sent to them from any process.

Why WebSocket rather than HTTP long-poll: a routed request must reach the node and its
tokens come back within a millisecond of a direct call. Over long-poll every dispatch
would complete the node's pending poll, and every reply would be a new signed request
(signature check and a replay-nonce write each); a WebSocket is authenticated once, on
the upgrade, then carries many concurrent requests and their streams both ways as small
frames. It is outbound from the node on the ordinary HTTPS port, so NAT and proxies
pass it, and pings over it measure the route itself.

Several API processes run behind a load balancer, and a node is connected to one of them.
Each process subscribes, per node it holds, to the node's route subject on core NATS (in
a queue group, so exactly one holder answers). A process asked to dispatch to a node it
does not hold sends the request there and gets the replies streamed back to an inbox.
"""

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from adapters.jetstream.client import Client, status_of
from adapters.node_auth import NodeDirectory
from adapters.recorder import Recorder
from adapters.route_connection import NodeConnection, RouteClosed
from domain.broker_frames import Cancel, Dispatch, Done, Failed, Reply, encode
from domain.decoding import Decoded
from domain.envelope import body_of
from domain.events import Event, RouteConnected, RouteProbed, decode_payload
from domain.ids import uuid7
from domain.nodes import ENROLLED
from domain.routes import decide_connected, decide_disconnected, route_state

log = logging.getLogger("b3iq.broker")

NO_RESPONDERS = "503"
"""How the NATS server marks a message nobody was subscribed to receive."""
PROBES_PER_SLICE = 200
_relay_in = msgspec.json.Decoder(Dispatch | Cancel)
_relay_out = msgspec.json.Decoder(Reply)


class _Relayed(NamedTuple):
    """A reply relayed to us: a frame, or the server's "no responders" status."""

    data: bytes
    headers: bytes | None


class RouteUnavailable(Exception):
    """No control-plane process holds a connection from this node."""


class Broker:
    def __init__(
        self,
        recorder: Recorder,
        directory: NodeDirectory,
        *,
        probe_interval_s: float,
        probe_timeout_s: float,
        reply_timeout_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._recorder = recorder
        self._directory = directory
        self._topology = recorder.topology
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._clock = clock
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid7()[-8:]}"
        self.connections: dict[str, NodeConnection] = {}
        self._subs: dict[str, Subscription] = {}
        self._relayed: dict[str, asyncio.Task[None]] = {}
        self._nc: Client | None = None
        self._follow: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbox = ""
        self._inbox_sub: Subscription | None = None
        self._awaiting: dict[str, asyncio.Queue[_Relayed]] = {}
        """Relayed requests of ours, by request id: their replies, as they arrive."""

    async def start(self, nc: Client | None) -> None:
        """With NATS: answer for held nodes, and let go of a node another process took."""
        self._nc = nc
        if nc is not None:
            self._follow = await nc.subscribe(
                f"{self._topology.prefix}.ev.route.*", cb=self._on_route_event
            )
            # One inbox for every request this process relays: no subscribe and
            # unsubscribe round trip per request.
            self._inbox = nc.new_inbox()
            self._inbox_sub = await nc.subscribe_raw(f"{self._inbox}.*", self._on_reply)
        self._spawn(self._probe_forever())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self.connections.values()):
            conn.close("shutdown")
            await self.detach(conn)
        for sub in (self._follow, self._inbox_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    # -- connections held here ------------------------------------------------------

    async def attach(self, conn: NodeConnection) -> None:
        """A node just connected here: it replaces any older connection of the node."""
        old = self.connections.get(conn.node_id)
        if old is not None:
            old.close("replaced")
        self.connections[conn.node_id] = conn
        if self._nc is not None and conn.node_id not in self._subs:
            self._subs[conn.node_id] = await self._nc.subscribe_raw(
                self._topology.route_subject(conn.node_id), self._on_relay, queue="holder"
            )
        try:
            rtt = await conn.ping(self.probe_timeout_s)
        except (TimeoutError, RouteClosed):
            conn.close("probe_failed")
            return
        if conn.closed.is_set():  # replaced while we pinged: the newer session records itself
            return

        def decide(tail: Decoded | None) -> list[Event]:
            state = route_state(tail.event if tail else None, conn.node_id)
            return decide_connected(
                state,
                session_id=conn.session_id,
                process_id=self.process_id,
                key_id=conn.key_id,
                rtt_ms=round(rtt, 3),
            )

        await self._recorder.record(self._topology.subject("route", conn.node_id), decide)
        await self._record_probes([(conn, rtt)])

    async def detach(self, conn: NodeConnection) -> None:
        """The connection ended (its reason is on it): forget it and record that."""
        conn.close(conn.close_reason)
        if self.connections.get(conn.node_id) is conn:
            del self.connections[conn.node_id]
            sub = self._subs.pop(conn.node_id, None)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

        def decide(tail: Decoded | None) -> list[Event]:
            state = route_state(tail.event if tail else None, conn.node_id)
            return decide_disconnected(state, session_id=conn.session_id, reason=conn.close_reason)

        try:
            await self._recorder.record(self._topology.subject("route", conn.node_id), decide)
        except Exception as exc:  # the probe's staleness will say it instead
            log.warning("route disconnect not recorded: %s", type(exc).__name__)

    # -- dispatch ---------------------------------------------------------------------

    async def dispatch(
        self, node_id: str, request: bytes, dispatch_id: str | None = None
    ) -> AsyncGenerator[Reply, None]:
        """The node's replies to one chat request, wherever its connection is held.
        Raises RouteUnavailable when no process holds it; leaving early cancels.
        ``dispatch_id`` (default: a fresh one) is what the node's receipt will name."""
        dispatch_id = dispatch_id or uuid7()
        conn = self.connections.get(node_id)
        if conn is not None and not conn.closed.is_set():
            try:
                async for frame in conn.dispatch(request, self.reply_timeout_s, dispatch_id):
                    yield frame
            except RouteClosed:
                yield Failed("", 502, "router_dispatch_failed", "the route closed mid-request")
            return
        if self._nc is None:
            raise RouteUnavailable(node_id)
        async for frame in self._relay(self._nc, node_id, request, dispatch_id):
            yield frame

    async def _relay(
        self, nc: Client, node_id: str, request: bytes, request_id: str
    ) -> AsyncIterator[Reply]:
        """Publish to the holder with a reply subject under our inbox: the holder streams
        the replies there, and with no holder the server itself answers "no responders"
        at once (no acknowledgement round trip on the way)."""
        replies: asyncio.Queue[_Relayed] = asyncio.Queue()
        self._awaiting[request_id] = replies
        subject = self._topology.route_subject(node_id)
        dispatch = encode(Dispatch(request_id, msgspec.Raw(request)))
        finished = False
        try:
            nc.publish_now(subject, dispatch, reply=f"{self._inbox}.{request_id}")
            while True:
                try:
                    async with asyncio.timeout(self.reply_timeout_s):
                        data, headers = await replies.get()
                except TimeoutError:
                    yield Failed(request_id, 504, "route_timeout", "the node did not answer")
                    return
                if status_of(headers) == NO_RESPONDERS:
                    finished = True
                    raise RouteUnavailable(node_id)
                frame = _relay_out.decode(data)
                finished = isinstance(frame, Done | Failed)
                yield frame
                if finished:
                    return
        finally:
            self._awaiting.pop(request_id, None)
            if not finished:
                with contextlib.suppress(Exception):
                    nc.publish_now(subject, encode(Cancel(request_id)))

    # Both subscriptions are raw (see Client.subscribe_raw): handled from the read loop,
    # with no Msg, queue and task per message on a request's critical path.

    def _on_reply(self, subject: bytes, _reply: bytes, data: bytes, headers: bytes | None) -> None:
        replies = self._awaiting.get(subject.rsplit(b".", 1)[-1].decode())
        if replies is not None:  # else a reply to a request we gave up on
            replies.put_nowait(_Relayed(data, headers))

    def _on_relay(self, subject: bytes, reply: bytes, data: bytes, _headers: bytes | None) -> None:
        """Another process asks us to run a request on a node we hold."""
        try:
            frame = _relay_in.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            return
        if isinstance(frame, Cancel):
            task = self._relayed.get(frame.id)
            if task is not None:
                task.cancel()
            return
        if not reply or self._nc is None:
            return
        inbox = reply.decode()
        conn = self.connections.get(subject.rsplit(b".", 1)[-1].decode())
        if conn is None or conn.closed.is_set():  # it left us a moment ago: say so now
            gone = Failed(frame.id, 503, "route_unavailable", "the node's route is down")
            # This runs in the read loop: a refused publish (closing) must not end it.
            with contextlib.suppress(NatsError):
                self._nc.publish_now(inbox, encode(gone))
            return
        task = asyncio.create_task(self._serve_relayed(inbox, conn, frame))
        self._relayed[frame.id] = task
        task.add_done_callback(lambda _: self._relayed.pop(frame.id, None))

    async def _serve_relayed(self, inbox: str, conn: NodeConnection, frame: Dispatch) -> None:
        assert self._nc is not None
        try:
            request = bytes(frame.request)
            async for reply in conn.dispatch(request, self.reply_timeout_s, frame.id):
                self._nc.publish_now(inbox, encode(reply))
        except RouteClosed:
            failed = Failed(frame.id, 502, "router_dispatch_failed", "the route closed")
            self._nc.publish_now(inbox, encode(failed))

    # -- probes -----------------------------------------------------------------------

    async def probe(self, conn: NodeConnection) -> float | None:
        """The round trip in ms; None (and the connection dropped) when it failed or
        the node may no longer hold a route."""
        state, _ = await self._directory.state(conn.node_id)
        if state is None or state.status != ENROLLED:
            conn.close("node_revoked")
            return None
        try:
            return await conn.ping(self.probe_timeout_s)
        except (TimeoutError, RouteClosed):
            conn.close("probe_failed")
            return None

    async def probe_all(self) -> int:
        """Ping every held connection once; record each result; drop the silent ones."""
        conns = list(self.connections.values())
        rtts = await asyncio.gather(*(self.probe(c) for c in conns))
        await self._record_probes(list(zip(conns, rtts, strict=True)))
        return len(conns)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self.probe_all()
            except Exception as exc:
                log.warning("route probes not recorded: %s", type(exc).__name__)

    async def _record_probes(self, results: list[tuple[NodeConnection, float | None]]) -> None:
        """In slices, yielding between them: signing thousands of probes at once would hold
        the event loop (and every routed request on it) for seconds."""
        for start in range(0, len(results), PROBES_PER_SLICE):
            await self._record_probe_slice(results[start : start + PROBES_PER_SLICE])
            await asyncio.sleep(0)

    async def _record_probe_slice(self, results: list[tuple[NodeConnection, float | None]]) -> None:
        now = self._clock()
        events: list[tuple[str, Event]] = [
            (
                self._topology.route_probe_subject(conn.node_id),
                RouteProbed(
                    node_id=conn.node_id,
                    session_id=conn.session_id,
                    ok=rtt is not None,
                    rtt_ms=None if rtt is None else round(rtt, 3),
                    probed_at=now,
                ),
            )
            for conn, rtt in results
        ]
        if events:
            await self._recorder.record_evidence(events)

    async def _on_route_event(self, msg: Msg) -> None:
        """A newer session of a node we hold, held elsewhere: ours is a stale half."""
        node_id = msg.subject.rsplit(".", 1)[-1]
        conn = self.connections.get(node_id)
        if conn is None:
            return
        try:
            decoded = _route_connected(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            return
        if decoded is not None and decoded.session_id != conn.session_id:
            conn.close("replaced")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _route_connected(data: bytes) -> RouteConnected | None:
    body = body_of(data)
    if body.type != "RouteConnected":
        return None
    event = decode_payload(body.type, body.schema_version, body.payload)
    return event if isinstance(event, RouteConnected) else None
