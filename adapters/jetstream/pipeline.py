"""Many JetStream publishes in flight at once, each resolved by its own ack or error.

Replies come to one inbox subscription of ours and are matched by token, which costs far
less per message than a request each (a future, an inbox and a timer apiece).
"""

import asyncio
import functools
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from adapters.jetstream.acks import Ack, parse_ack

Publish = tuple[str, bytes, dict[str, str]]
"""Subject, data and headers of one message."""


def require_connection(nc: Client) -> None:
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
        await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.pop(msg.subject[len(self._prefix) :], None)
        if future is None or future.done():
            return
        try:
            future.set_result(parse_ack(msg))
        except Exception as exc:  # the reply itself is the error to hand back
            future.set_exception(exc)

    def _forget(self, token: str, _: object) -> None:
        self._futures.pop(token, None)

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
        require_connection(self._nc)
        if not self._prefix:
            await self._start()
        loop = asyncio.get_running_loop()
        futures = []
        publish = self._nc.publish
        for subject, data, headers in items:
            self._counter += 1
            token = str(self._counter)
            future: asyncio.Future[Ack] = loop.create_future()
            future.add_done_callback(functools.partial(self._forget, token))
            self._futures[token] = future
            futures.append(future)
            await publish(subject, data, reply=self._prefix + token, headers=headers)
        return futures


def _outcome(future: asyncio.Future[Ack]) -> Ack | Exception:
    if future.cancelled():
        return TimeoutError("no acknowledgement in time")
    exc = future.exception()
    if exc is None:
        return future.result()
    return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
