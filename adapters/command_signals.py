"""Waking long-polling nodes the moment a command waits for them, in every API process.

Every API process subscribes (NATS core, no consumer state) to the ledger's command
subjects: JetStream stores each append and NATS also delivers it to plain subscribers, so
whichever process holds a node's long-poll hears of the node's new command, whichever
process issued it. A lost signal costs only latency: the poll also reads the read model.
A signal that arrives while the node is between polls is kept a little while, so the next
poll gets it even when the read model has not caught up with the command yet.
"""

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterator

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from domain.envelope import body_of
from domain.events import (
    CommandExpired,
    CommandIssued,
    CommandRetried,
    SchemaMismatch,
    UnknownEventType,
    decode_payload,
)
from domain.streams import Topology

log = logging.getLogger("b3iq.commands")


class Waiter:
    def __init__(self) -> None:
        self.hints: list[str] = []
        self._event = asyncio.Event()

    def wake(self, command_id: str) -> None:
        self.hints.append(command_id)
        self._event.set()

    def take(self) -> list[str]:
        hints, self.hints = self.hints, []
        self._event.clear()
        return hints

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class CommandSignals:
    KEPT_S = 10.0
    """How long a signal waits for the node's next poll: well past the read model's lag."""
    KEPT_NODES = 10_000

    def __init__(self) -> None:
        self._waiting: dict[str, set[Waiter]] = {}
        self._recent: OrderedDict[str, deque[tuple[float, str]]] = OrderedDict()
        self._sub: Subscription | None = None

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    @contextlib.contextmanager
    def waiter(self, node_id: str) -> Iterator[Waiter]:
        waiter = Waiter()
        cutoff = time.monotonic() - self.KEPT_S
        for at, command_id in self._recent.pop(node_id, ()):
            if at > cutoff:
                waiter.wake(command_id)
        self._waiting.setdefault(node_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiting.get(node_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiting[node_id]

    def notify(self, node_id: str, command_id: str) -> None:
        waiters = self._waiting.get(node_id)
        if waiters:
            for waiter in waiters:
                waiter.wake(command_id)
            return
        recent = self._recent.setdefault(node_id, deque(maxlen=32))
        recent.append((time.monotonic(), command_id))
        self._recent.move_to_end(node_id)
        if len(self._recent) > self.KEPT_NODES:
            self._recent.popitem(last=False)

    async def listen(self, nc: Client, topology: Topology) -> None:
        self._sub = await nc.subscribe(f"{topology.prefix}.ev.command.*", cb=self._on_msg)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        try:
            body = body_of(msg.data)
            event = decode_payload(body.type, body.schema_version, body.payload)
        except (msgspec.DecodeError, msgspec.ValidationError, UnknownEventType, SchemaMismatch):
            log.warning("undecodable message on %s", msg.subject)
            return
        if isinstance(event, CommandIssued | CommandRetried) or (
            isinstance(event, CommandExpired) and event.requeued
        ):
            self.notify(event.node_id, event.command_id)
