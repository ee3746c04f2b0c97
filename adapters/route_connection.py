"""One node's live broker connection inside the process that holds it.

Requests are multiplexed by id: each dispatch gets a queue its replies land in, so many
requests share one connection, and a reader task delivers every frame the node sends.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec

from domain.broker_frames import Cancel, Dispatch, Done, Failed, Ping, Pong, Reply, ToNode, encode
from domain.ids import uuid7

SendBytes = Callable[[bytes], Awaitable[None]]


class RouteClosed(Exception):
    """The connection went away while a request was on it."""


class NodeConnection:
    def __init__(self, node_id: str, key_id: str, send: SendBytes) -> None:
        self.node_id = node_id
        self.key_id = key_id
        self.session_id = uuid7()
        self._send = send
        self._replies: dict[str, asyncio.Queue[Reply | None]] = {}
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self.closed = asyncio.Event()
        self.close_reason = "node_closed"

    @property
    def in_flight(self) -> int:
        return len(self._replies)

    async def send(self, frame: ToNode) -> None:
        if self.closed.is_set():
            raise RouteClosed(self.node_id)
        await self._send(encode(frame))

    def deliver(self, frame: Reply | Pong) -> None:
        """A frame from the node: to the request (or ping) it answers; strays are dropped."""
        if isinstance(frame, Pong):
            pong = self._pongs.pop(frame.id, None)
            if pong is not None and not pong.done():
                pong.set_result(None)
            return
        queue = self._replies.get(frame.id)
        if queue is not None:
            queue.put_nowait(frame)

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for queue in self._replies.values():
            queue.put_nowait(None)
        for pong in self._pongs.values():
            if not pong.done():
                pong.set_exception(RouteClosed(self.node_id))

    async def ping(self, timeout: float) -> float:
        """Round trip through the node's event loop, in milliseconds."""
        ping_id = uuid7()
        pong = asyncio.get_running_loop().create_future()
        self._pongs[ping_id] = pong
        started = time.perf_counter()
        try:
            await self.send(Ping(ping_id))
            await asyncio.wait_for(pong, timeout)
        finally:
            self._pongs.pop(ping_id, None)
        return (time.perf_counter() - started) * 1000

    async def dispatch(
        self, request: bytes, timeout: float, request_id: str
    ) -> AsyncIterator[Reply]:
        """The node's replies to one request, ending with Done or Failed. ``timeout``
        bounds the wait for each reply; leaving early cancels the request on the node."""
        if request_id in self._replies:
            raise ValueError(f"dispatch {request_id} is already running on this route")
        queue: asyncio.Queue[Reply | None] = asyncio.Queue()
        self._replies[request_id] = queue
        finished = False
        try:
            await self.send(Dispatch(request_id, msgspec.Raw(request)))
            while True:
                try:
                    async with asyncio.timeout(timeout):  # no task per frame, as wait_for
                        frame = await queue.get()
                except TimeoutError:
                    yield Failed(request_id, 504, "route_timeout", "the node did not answer")
                    return
                if frame is None:
                    raise RouteClosed(self.node_id)
                finished = isinstance(frame, Done | Failed)
                yield frame
                if finished:
                    return
        finally:
            self._replies.pop(request_id, None)
            if not finished and not self.closed.is_set():
                with contextlib.suppress(Exception):
                    await self.send(Cancel(request_id))
