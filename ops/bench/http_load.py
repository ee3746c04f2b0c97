"""A lean HTTP/1.1 load generator: prebuilt request bytes over keep-alive connections.

httpx spends far more CPU per request than the server under test would, and on a small
machine the generator shares the cores with it. Here each request is bytes built before
the clock starts; a connection writes one, parses just enough of the answer (status line,
Content-Length) and writes the next, so nearly all the time measured is the server's.
"""

import asyncio
import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast


def request_bytes(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    host: str = "bench",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Exchanges:
    """What happened to each request, by its index (perf_counter seconds)."""

    sent: list[float]
    done: list[float]
    status: list[int]
    bodies: list[bytes]
    started: float = 0.0
    finished: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def latencies(self) -> list[float]:
        return [d - s for s, d in zip(self.sent, self.done, strict=True) if d > 0]


class _Connection(asyncio.Protocol):
    def __init__(self, load: "_Load", lane: int) -> None:
        self._load = load
        self._lane = lane
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._index = -1
        self._need = -1
        self._head = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._next()

    def _next(self) -> None:
        index = self._load.take(self._lane)
        self._index = index
        if index < 0:
            assert self._transport is not None
            self._transport.close()
            return
        self._load.exchanges.sent[index] = time.perf_counter()
        assert self._transport is not None
        self._transport.write(self._load.requests[index])

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            if self._need < 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end]).lower()
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    self._fail("a response without Content-Length")
                    return
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop > 0 else None])
                self._head = end + 4
                self._need = self._head + length
            if len(buffer) < self._need:
                return
            exchanges, index = self._load.exchanges, self._index
            exchanges.done[index] = time.perf_counter()
            exchanges.status[index] = int(buffer[9:12])
            if self._load.keep_bodies:
                exchanges.bodies[index] = bytes(buffer[self._head : self._need])
            del buffer[: self._need]
            self._need = -1
            self._load.finished_one()
            self._next()

    def _fail(self, why: str) -> None:
        self._load.exchanges.errors.append(why)
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._index >= 0:
            self._load.exchanges.errors.append(f"connection lost: {exc!r}")
            self._load.finished_one()


class _Load:
    def __init__(
        self,
        requests: Sequence[bytes],
        keep_bodies: bool,
        lanes: int,
        lane_of: Sequence[int] | None,
    ) -> None:
        self.requests = requests
        self.keep_bodies = keep_bodies
        count = len(requests)
        self.exchanges = Exchanges([0.0] * count, [0.0] * count, [0] * count, [b""] * count)
        self._orders: list[Iterator[int]]
        if lane_of is None:
            self._orders = [iter(range(count))] * lanes  # one queue, shared
        else:
            pinned: list[list[int]] = [[] for _ in range(lanes)]
            for index, lane in enumerate(lane_of):
                pinned[lane % lanes].append(index)
            self._orders = [iter(p) for p in pinned]
        self._left = count
        self.all_done = asyncio.get_running_loop().create_future()
        if not count:
            self.all_done.set_result(None)

    def take(self, lane: int) -> int:
        return next(self._orders[lane], -1)

    def finished_one(self) -> None:
        self._left -= 1
        if self._left <= 0 and not self.all_done.done():
            self.all_done.set_result(None)


async def drive(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int,
    keep_bodies: bool = False,
    lane_of: Sequence[int] | None = None,
    timeout: float = 300.0,
) -> Exchanges:
    """Send every request, ``connections`` at a time, each connection one after another.

    ``lane_of``: the connection (modulo ``connections``) each request must use, as a
    client with its own connection would; by default any free connection takes the next.
    """
    loop = asyncio.get_running_loop()
    lanes = min(connections, len(requests))
    load = _Load(requests, keep_bodies, lanes, lane_of)
    load.exchanges.started = time.perf_counter()
    transports = []
    for lane in range(lanes):
        transport, _ = await loop.create_connection(
            functools.partial(_Connection, load, lane), host, port
        )
        transports.append(transport)
    try:
        await asyncio.wait_for(load.all_done, timeout)
    finally:
        load.exchanges.finished = time.perf_counter()
        for transport in transports:
            transport.close()
    return load.exchanges


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]
