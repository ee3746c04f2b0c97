"""The event store on NATS JetStream: conditional, atomic, idempotent appends."""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from adapters.jetstream.acks import (
    DUPLICATE_IN_BATCH,
    WRONG_LAST_SEQUENCE,
    Ack,
    NoStreamResponders,
    PublishRejected,
)
from adapters.jetstream.client import Client, status_of
from adapters.jetstream.pipeline import Pipeline, require_connection
from adapters.jetstream.topology import ensure_topology
from adapters.urls import redact, server_list
from domain.envelope import StoredEvent
from domain.ids import uuid7
from domain.ports import AppendResult, ConcurrencyConflict, EventReader, StoreUnavailable
from domain.sealing import Sealed, split_event_id
from domain.streams import Topology

_UNAVAILABLE = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    NoStreamResponders,
)


class JetStreamEventStore:
    def __init__(self, nc: Client, topology: Topology, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.topology = topology
        self.timeout = timeout
        self._pipeline = Pipeline(nc, timeout)

    @classmethod
    async def connect(
        cls, url: str, topology: Topology, *, replicas: int = 1, name: str = "b3iq"
    ) -> "JetStreamEventStore":
        """Connect and declare the streams; raises StoreUnavailable naming the URL.

        ``url`` may list several servers of a cluster, comma-separated: the client picks
        one and moves to another when it goes away."""
        servers = server_list(url)
        shown = ", ".join(redact(u) for u in servers)
        try:
            # With unlimited reconnects nats-py would retry the first connect forever too.
            nc = Client()
            await asyncio.wait_for(
                nc.connect(
                    servers,
                    name=name,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # typed int, used as seconds
                    allow_reconnect=True,
                    error_cb=_quiet,
                    disconnected_cb=_noop,
                ),
                timeout=5,
            )
        except (OSError, *_UNAVAILABLE) as exc:
            raise StoreUnavailable(
                f"cannot reach NATS at {shown}: {str(exc) or type(exc).__name__}"
            ) from exc
        store = cls(nc, topology)
        try:
            await ensure_topology(store.js, topology, replicas)
        except (*_UNAVAILABLE, nats.errors.Error) as exc:
            # A cluster still electing its meta leader does not answer yet.
            await nc.close()
            raise StoreUnavailable(
                f"JetStream at {shown} did not declare the streams: {type(exc).__name__} {exc}"
            ) from exc
        return store

    async def close(self) -> None:
        try:
            await self.nc.drain()
        except nats.errors.Error:  # already gone, or reconnecting: nothing left to flush
            await self.nc.close()

    async def append(
        self,
        subject: str,
        events: Sequence[Sealed],
        expected_last_seq: int | None,
        *,
        expected_stream_seq: int | None = None,
    ) -> AppendResult:
        if not events:
            raise ValueError("nothing to append")
        conditions = {}
        if expected_last_seq is not None:
            conditions["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_seq)
        if expected_stream_seq is not None:
            conditions["Nats-Expected-Last-Sequence"] = str(expected_stream_seq)
        try:
            require_connection(self.nc)
            if len(events) == 1:
                ack = await self._publish_one(subject, events[0], conditions)
            else:
                ack = await self._publish_batch(subject, events, conditions)
        except PublishRejected as exc:
            return await self._after_rejection(exc, subject, events, bool(conditions))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"append to {subject}: {type(exc).__name__}") from exc
        first = ack.seq - len(events) + 1
        return AppendResult(ack.stream, first, ack.seq, ack.duplicate)

    async def _publish_one(self, subject: str, sealed: Sealed, conditions: dict[str, str]) -> Ack:
        headers = {"Nats-Msg-Id": sealed.event_id, **conditions}
        return await self._pipeline.request(subject, sealed.data, headers)

    async def _publish_batch(
        self, subject: str, events: Sequence[Sealed], conditions: dict[str, str]
    ) -> Ack:
        # JetStream atomic batch (ADR-50): the server stores all of them at the commit or none.
        batch_id = uuid7()
        last = len(events)
        for number, sealed in enumerate(events, start=1):
            headers = {
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(number),
                "Nats-Msg-Id": sealed.event_id,
            }
            if number == 1:
                headers |= conditions  # checked at the commit, for the batch as a whole
            if number < last:  # queued: the commit's publish_now writes them all at once
                await self.nc.publish(subject, sealed.data, headers=headers)
        headers["Nats-Batch-Commit"] = "1"
        return await self._pipeline.request(subject, events[-1].data, headers)

    async def _after_rejection(
        self,
        exc: PublishRejected,
        subject: str,
        events: Sequence[Sealed],
        conditional: bool,
    ) -> AppendResult:
        if exc.err_code == DUPLICATE_IN_BATCH:
            # Batches are atomic, so one known id means the whole batch landed before.
            stream = self.topology.stream_of(subject).name
            landed = _landed(await self.last(subject), events)
            return landed or AppendResult(stream, 0, 0, duplicate=True)
        if exc.err_code == WRONG_LAST_SEQUENCE and conditional:
            # Our own earlier attempt may have landed (a lost ack): then this is a retry.
            tail = await self.last(subject)
            landed = _landed(tail, events)
            if landed is None:
                raise ConcurrencyConflict(subject, tail) from None
            return landed
        raise exc

    async def append_many(self, items: Sequence[tuple[str, Sealed]]) -> list[AppendResult]:
        try:
            acks = await self._pipeline.publish(
                [(subject, s.data, _conditions(s, None)) for subject, s in items]
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"pipelined append: {type(exc).__name__}") from exc
        return [AppendResult(a.stream, a.seq, a.seq, a.duplicate) for a in acks]

    async def append_each(
        self, items: Sequence[tuple[str, Sealed, int | None]]
    ) -> list[AppendResult | ConcurrencyConflict]:
        try:
            outcomes = await self._pipeline.publish_each(
                [(subject, s.data, _conditions(s, expected)) for subject, s, expected in items]
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"pipelined append: {type(exc).__name__}") from exc
        results: list[AppendResult | ConcurrencyConflict] = []
        for (subject, sealed, _), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Ack):
                stream, seq, duplicate = outcome
                results.append(AppendResult(stream, seq, seq, duplicate))
            elif isinstance(outcome, PublishRejected) and outcome.err_code == WRONG_LAST_SEQUENCE:
                # The server checks the condition before the dedupe: a retry of an event
                # that landed (a lost ack) is refused for the sequence it moved itself.
                tail = await self.last(subject)
                results.append(_landed(tail, [sealed]) or ConcurrencyConflict(subject, tail))
            elif isinstance(outcome, _UNAVAILABLE):
                raise StoreUnavailable(f"pipelined append: {type(outcome).__name__}") from outcome
            else:
                raise outcome
        return results

    async def last(self, subject: str) -> StoredEvent | None:
        stream = self.topology.stream_of(subject).name
        try:
            require_connection(self.nc)
            raw = await self.js.get_last_msg(stream, subject, direct=True)
        except NotFoundError:
            return None
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"read {subject}: {type(exc).__name__}") from exc
        return StoredEvent(stream, raw.seq or 0, raw.subject or subject, raw.data or b"")

    async def bounds(self, stream: str) -> tuple[int, int]:
        try:
            require_connection(self.nc)
            info = await self.js.stream_info(stream)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"stream info {stream}: {type(exc).__name__}") from exc
        if not info.state.messages:
            return (0, 0)
        return (info.state.first_seq, info.state.last_seq)

    async def reader(self, stream: str, from_seq: int) -> EventReader:
        return _Reader(self, stream, from_seq)


def _landed(tail: StoredEvent | None, events: Sequence[Sealed]) -> AppendResult | None:
    """``events``' place when ``tail`` is the last of them: they landed before."""
    if tail is None or split_event_id(tail.data) != events[-1].event_id:
        return None
    return AppendResult(tail.stream, tail.seq - len(events) + 1, tail.seq, duplicate=True)


def _conditions(sealed: Sealed, expected_last_seq: int | None) -> dict[str, str]:
    headers = {"Nats-Msg-Id": sealed.event_id}
    if expected_last_seq is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_seq)
    return headers


class _Reader:
    """Reads a stream in order through an ephemeral pull consumer, re-made when lost.

    Pull requests go out by hand and messages land in a buffer from a callback
    subscription: nats-py's fetch() spends a task, a uuid4 and a wait_for on every message,
    and Msg.metadata builds a dataclass and a datetime, which held replays near 40k
    events/s. At most one pull request is open at a time.
    """

    def __init__(self, store: JetStreamEventStore, stream: str, from_seq: int) -> None:
        self._store = store
        self._stream = stream
        self._next = max(from_seq, 1)
        self._sub: Any = None
        self._api = ""
        self._inbox = ""
        self._buffer: list[StoredEvent] = []
        self._owed = 0
        """Messages the open pull request may still deliver (0: none open)."""
        self._draining = False
        """The open request takes what is there now and ends (rather than waiting for more)."""
        self._request_deadline = 0.0
        """When the server must have finished the open request; later, it was lost."""
        self._lost = False
        self._changed = asyncio.Event()

    async def _subscribe(self) -> None:
        spec = next(s for s in self._store.topology.streams if s.name == self._stream)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._next,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
            filter_subject=spec.subjects,
        )
        nc = self._store.nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe_raw(self._inbox, self._on_msg)
        info = await self._store.js.add_consumer(self._stream, config)
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{info.name}"
        self._buffer, self._owed, self._lost = [], 0, False

    def _on_msg(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if reply:  # a stream message; status messages carry no reply subject
            seq = _stream_seq(reply)
            self._buffer.append(StoredEvent(self._stream, seq, subject.decode(), data))
            self._owed -= 1
        else:
            status = status_of(headers)
            if status == "100":  # idle heartbeat
                return
            self._owed = 0  # 404 no messages, 408 expired: the request is over
            if status not in ("404", "408"):
                self._lost = True  # 409: consumer deleted, leadership change, ...
        self._changed.set()

    async def _pull(self, count: int, expires: float | None) -> None:
        request: dict[str, Any] = {"batch": count}
        if expires is None:
            request["no_wait"] = True
        else:
            request["expires"] = int(expires * 1e9)
        self._owed, self._draining = count, expires is None
        self._request_deadline = time.monotonic() + (expires or 0.0) + self._store.timeout
        await self._store.nc.publish(self._api, json.dumps(request).encode(), self._inbox)

    async def _wait(self, done: Callable[[], bool], deadline: float) -> None:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def next_batch(self, max_count: int, timeout: float) -> list[StoredEvent]:
        deadline = time.monotonic() + timeout
        probed = False
        try:
            if self._sub is None:
                await self._subscribe()
            while not self._buffer:
                if self._owed and time.monotonic() > self._request_deadline:
                    self._lost = True  # the server never finished it: the consumer is gone
                if self._lost:
                    raise NotFoundError
                left = deadline - time.monotonic()
                if not self._owed and not probed:
                    probed = True
                    await self._pull(max_count, expires=None)  # whatever is there now
                    await self._wait(lambda: not self._owed, deadline)
                    continue
                if left < 0.001:
                    break
                if not self._owed:
                    await self._pull(max_count, expires=left)  # caught up: wait for more
                await self._wait(lambda: bool(self._buffer) or not self._owed, deadline)
            if self._draining and self._owed and len(self._buffer) < max_count:
                # A batch is on its way (the one asked for ahead): take it whole.
                await self._wait(lambda: not self._owed or len(self._buffer) >= max_count, deadline)
        except (NotFoundError, *_UNAVAILABLE) as exc:
            await self._drop()
            raise StoreUnavailable(f"read {self._stream}: {type(exc).__name__}") from exc
        batch, self._buffer = self._buffer[:max_count], self._buffer[max_count:]
        if batch:
            self._next = batch[-1].seq + 1
        if len(batch) == max_count and not self._owed and not self._buffer:
            # More is likely there: have the server send it while the caller works on this
            # batch, instead of waiting for a round trip on the next call. A failure shows
            # on that call (the request is owed and overdue, or the connection is down).
            with contextlib.suppress(*_UNAVAILABLE):
                await self._pull(max_count, expires=None)
        return batch

    async def _drop(self) -> None:
        sub, self._sub = self._sub, None
        self._buffer, self._owed = [], 0  # re-read from self._next by a new consumer
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def close(self) -> None:
        await self._drop()


def _stream_seq(reply: bytes) -> int:
    """The stream sequence in a JetStream ack subject:
    $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (v1), or with
    <domain>.<account hash> after $JS.ACK and an optional token at the end (v2)."""
    tokens = reply.split(b".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


async def _quiet(exc: Exception) -> None:
    """Connection errors surface as StoreUnavailable at the call site; don't spam the log."""


async def _noop() -> None:
    return None
