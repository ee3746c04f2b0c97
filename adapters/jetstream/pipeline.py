"""JetStream publishes, each resolved by its own ack or error: many in flight at once, or
one that a request is waiting for.

Replies come to one raw inbox subscription of ours, handed over from the read loop and
matched by token: far less per message than nats-py's request (a future, an inbox, a
timer, a ``Msg`` and a turn of its subscription's task apiece).
"""

import asyncio
import functools
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as NatsClient

from adapters.jetstream.acks import Ack, parse_ack
from adapters.jetstream.client import Client

Publish = tuple[str, bytes, dict[str, str]]
"""Subject, data and headers of one message."""


def require_connection(nc: NatsClient) -> None:
    """Refuse at once while the server is away: nats-py would buffer the message, send it
    after reconnecting, and leave the caller to wait out its whole timeout meanwhile (an
    API answering 503 seconds late, with a write that may still land later)."""
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if not nc.is_connected:
        raise nats.errors.ConnectionReconnectingError


class Pipeline:
    MAX_IN_FLIGHT = 4096

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[Ack]] = {}
        self._counter = 0

    async def _start(self) -> None:
        self._prefix = f"{self._nc.new_inbox()}."
        await self._nc.subscribe_raw(self._prefix + "*", self._on_reply)

    def _on_reply(self, subject: bytes, _reply: bytes, data: bytes, headers: bytes | None) -> None:
        future = self._futures.pop(subject[len(self._prefix) :].decode(), None)
        if future is None or future.done():
            return
        try:
            future.set_result(parse_ack(data, headers))
        except Exception as exc:  # the reply itself is the error to hand back
            future.set_exception(exc)

    def _forget(self, token: str, _: object) -> None:
        self._futures.pop(token, None)

    def _expect(self, loop: asyncio.AbstractEventLoop) -> tuple[str, asyncio.Future[Ack]]:
        """A reply subject and the future its ack will resolve."""
        self._counter += 1
        token = str(self._counter)
        future: asyncio.Future[Ack] = loop.create_future()
        future.add_done_callback(functools.partial(self._forget, token))
        self._futures[token] = future
        return self._prefix + token, future

    async def _ready(self) -> None:
        require_connection(self._nc)
        if not self._prefix:
            await self._start()

    async def request(self, subject: str, data: bytes, headers: dict[str, str]) -> Ack:
        """One publish that a caller waits for: written to the socket now, and resumed
        straight from the read loop by its ack (a TimeoutError when none comes)."""
        await self._ready()
        reply, future = self._expect(asyncio.get_running_loop())
        self._nc.publish_now(subject, data, reply, headers)
        async with asyncio.timeout(self._timeout):
            return await future

    async def publish(self, items: Sequence[Publish]) -> list[Ack]:
        """Every ack, in order; the first error (or a timeout) raises."""
        futures: list[asyncio.Future[Ack]] = []
        try:
            for start in range(0, len(items), self.MAX_IN_FLIGHT):
                futures.extend(await self._send(items[start : start + self.MAX_IN_FLIGHT]))
                await asyncio.wait_for(asyncio.gather(*futures[start:]), self._timeout)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
        return [f.result() for f in futures]

    async def publish_each(self, items: Sequence[Publish]) -> list[Ack | Exception]:
        """Each message's ack or its own error (TimeoutError when none came)."""
        futures: list[asyncio.Future[Ack]] = []
        try:
            for start in range(0, len(items), self.MAX_IN_FLIGHT):
                window = await self._send(items[start : start + self.MAX_IN_FLIGHT])
                futures.extend(window)
                await asyncio.wait(window, timeout=self._timeout)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
        return [_outcome(f) for f in futures]

    async def _send(self, items: Sequence[Publish]) -> list[asyncio.Future[Ack]]:
        await self._ready()
        loop = asyncio.get_running_loop()
        futures = []
        publish = self._nc.publish  # queued: the flusher writes a window in few calls
        for subject, data, headers in items:
            reply, future = self._expect(loop)
            futures.append(future)
            await publish(subject, data, reply=reply, headers=headers)
        return futures


def _outcome(future: asyncio.Future[Ack]) -> Ack | Exception:
    if future.cancelled():
        return TimeoutError("no acknowledgement in time")
    exc = future.exception()
    if exc is None:
        return future.result()
    return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
