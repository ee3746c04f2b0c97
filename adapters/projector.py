"""Runs projections: ordered reads from checkpoint+1, batch and checkpoint in one transaction."""

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
from prometheus_client import Counter, Gauge

from adapters.outages import TRANSIENT
from domain.decoding import decode_stored
from domain.envelope import StoredEvent
from domain.ports import EventReader, EventStore
from domain.streams import Topology
from projections.checkpoints import lock_checkpoint, move_checkpoint
from projections.projection import Projection

log = logging.getLogger("b3iq.projector")
APPLIED = Counter("b3iq_projection_events_total", "Events applied", ["projection"])
POSITION = Gauge("b3iq_projection_position", "Last applied stream sequence", ["projection"])


class SequenceGap(Exception):
    """The stream skipped sequences the projection has not seen: refuse to paper over it."""


class _Rewound(Exception):
    """The committed checkpoint is behind what this runner applied: its tables were
    replaced (a blue/green rebuild was swapped in) and it must read on from there."""


class ProjectionRunner:
    """One projection over one stream. Exactly-once: a batch's rows and the checkpoint
    commit together, under a row lock on the checkpoint, so a crash anywhere (or a second
    runner) leaves each event applied once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: EventStore,
        topology: Topology,
        projection: Projection,
        *,
        batch_size: int = 5000,
    ) -> None:
        self.pool = pool
        self.store = store
        self.projection = projection
        spec = topology.ledger if projection.stream == "ledger" else topology.heartbeats
        self.stream = spec.name
        self.windowed = not spec.chained  # a retention window may expire unread events
        self.batch_size = batch_size
        self.position = 0
        """The last sequence this runner knows is committed."""
        self._reader: EventReader | None = None

    async def _open(self) -> EventReader:
        if self._reader is None:
            async with self.pool.acquire() as conn:
                self.position = (
                    await conn.fetchval(
                        "SELECT last_seq FROM projection_checkpoints"
                        " WHERE projection = $1 AND stream = $2",
                        self.projection.name,
                        self.stream,
                    )
                    or 0
                )
            self._reader = await self.store.reader(self.stream, self.position + 1)
        return self._reader

    async def step(self, timeout: float = 1.0, until: int | None = None) -> int:
        """Apply at most one batch (ending at ``until`` if given); returns how many events
        it applied."""
        reader = await self._open()
        limit = self.batch_size if until is None else min(self.batch_size, until - self.position)
        if limit <= 0:
            return 0
        batch = await reader.next_batch(limit, timeout)
        if not batch:
            return 0
        try:
            return await self._apply(batch)
        except _Rewound:
            await self.reset()  # read on from the checkpoint we now find
            return 0
        except BaseException:
            await self.reset()  # re-read from what is committed, whatever happened
            raise

    async def _apply(self, batch: Sequence[StoredEvent]) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            committed = await lock_checkpoint(conn, self.projection.name, self.stream)
            if committed < self.position:  # the read models were swapped for a rebuild
                raise _Rewound
            fresh = [e for e in batch if e.seq > committed]  # another runner got there first
            if not fresh:
                self.position = committed
                return 0
            await self._check_contiguous(committed, fresh)
            await self.projection.apply(conn, [decode_stored(e) for e in fresh])
            await move_checkpoint(conn, self.projection.name, self.stream, fresh[-1].seq)
        self.position = fresh[-1].seq
        APPLIED.labels(self.projection.name).inc(len(fresh))
        POSITION.labels(self.projection.name).set(self.position)
        return len(fresh)

    async def _check_contiguous(self, committed: int, batch: Sequence[StoredEvent]) -> None:
        expected = committed + 1
        if batch[0].seq != expected and self.windowed:
            first, _ = await self.store.bounds(self.stream)
            if first > expected and batch[0].seq == first:
                log.warning(
                    "%s: events %d..%d expired before projection",
                    self.stream,
                    expected,
                    first - 1,
                )
                expected = first
        for event in batch:
            if event.seq != expected:
                raise SequenceGap(
                    f"{self.projection.name}: expected {self.stream} sequence {expected},"
                    f" got {event.seq}"
                )
            expected += 1

    async def reset(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()

    async def catch_up(self, target_seq: int, timeout: float = 60.0) -> None:
        """Run until the checkpoint reaches ``target_seq`` (replays, tests, rebuilds)."""
        deadline = time.monotonic() + timeout
        while self.position < target_seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.projection.name} stuck at {self.position}")
            await self.step(timeout=0.5)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up with the stream until ``stop`` is set; survive outages of NATS or Postgres."""
        backoff = 0.2
        while not stop.is_set():
            try:
                await self.step(timeout=1.0)
                backoff = 0.2
            except TRANSIENT as exc:
                log.warning("%s: %s; retrying in %.1fs", self.projection.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        await self.reset()


async def wait_for_projection(
    pool: asyncpg.Pool, projection: str, stream: str, seq: int, timeout: float = 5.0
) -> bool:
    """Read-your-writes: wait (bounded) until a projection has applied sequence ``seq``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        async with pool.acquire() as conn:
            done = await conn.fetchval(
                "SELECT last_seq >= $3 FROM projection_checkpoints"
                " WHERE projection = $1 AND stream = $2",
                projection,
                stream,
                seq,
            )
        if done:
            return True
        if time.monotonic() + delay > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
