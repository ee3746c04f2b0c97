"""Runs projections: ordered reads from checkpoint+1, batch and checkpoint in one transaction."""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter

import asyncpg
from prometheus_client import Counter, Gauge

from adapters.outages import TRANSIENT, wait_or_stop
from domain.decoding import Decoded
from domain.envelope import StoredEvent, body_of
from domain.events import type_names
from domain.partitions import WHOLE, Partition
from domain.ports import EventReader, EventStore
from domain.streams import StreamSpec, Topology
from projections.checkpoints import (
    claim_layout,
    committed_checkpoint,
    lock_checkpoint,
    move_checkpoint,
)
from projections.projection import Projection

log = logging.getLogger("b3iq.projector")
APPLIED = Counter("b3iq_projection_events_total", "Events applied", ["projection"])
POSITION = Gauge(
    "b3iq_projection_position", "Last applied stream sequence", ["projection", "partition"]
)


def stream_of(topology: Topology, projection: Projection) -> StreamSpec:
    return topology.ledger if projection.stream == "ledger" else topology.heartbeats


def runner_name(projection: Projection, partition: Partition) -> str:
    """The projection, and its partition when it is split: ``heartbeats[1/2]``."""
    if partition.count == 1:
        return projection.name
    return f"{projection.name}[{partition}]"


Typed = Mapping[str, Sequence[Decoded]]
"""Events read, grouped by event type in stream order: each decoded once (its payload when
first asked for), whichever projections then look at it."""

_SEQ = attrgetter("seq")


def by_type(events: Iterable[StoredEvent]) -> Typed:
    typed: defaultdict[str, list[Decoded]] = defaultdict(list)
    for event in events:
        body = body_of(event.data)
        typed[body.type].append(Decoded(event.seq, event.subject, body))
    return typed


class SequenceGap(Exception):
    """The stream skipped sequences the projection has not seen: refuse to paper over it."""


class _Rewound(Exception):
    """The committed checkpoint is behind what this runner applied: its tables were
    replaced (a blue/green rebuild was swapped in) and it must read on from there."""


class ProjectionRunner:
    """One projection (or one partition of it) over one stream. Exactly-once: a batch's
    rows and the partition's checkpoint commit together, under a row lock on the
    checkpoint, so a crash anywhere (or a second runner) leaves each event applied once.

    A partition reads the whole stream and applies the events of its own subjects; the
    others are read past like events it does not handle.

    Events the projection does not handle are read past without a transaction; the
    checkpoint catches up with them at most every ``IDLE_COMMIT_S``, when the stream goes
    quiet, or with the next batch it does handle. Re-reading them after a crash changes
    nothing, so exactly-once holds, and every handled event is always committed."""

    IDLE_COMMIT_S = 1.0

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: EventStore,
        topology: Topology,
        projection: Projection,
        *,
        batch_size: int = 5000,
        partition: Partition = WHOLE,
        linger_s: float = 0.0,
    ) -> None:
        self.pool = pool
        self.store = store
        self.projection = projection
        spec = stream_of(topology, projection)
        self.stream = spec.name
        self.windowed = not spec.chained  # a retention window may expire unread events
        self.batch_size = batch_size
        self.partition = partition
        self.linger_s = linger_s
        """After a partial batch, wait this long before the next read (see Settings)."""
        self._position_gauge = POSITION.labels(projection.name, str(partition))
        self._handled = type_names(*projection.handles)
        self.position = 0
        """The last sequence this runner has read past: applied, or not its business."""
        self.committed = 0
        """The last sequence this runner knows is committed (``position`` or behind)."""
        self._commit_due = 0.0
        self._reader: EventReader | None = None

    @property
    def name(self) -> str:
        return runner_name(self.projection, self.partition)

    async def load(self) -> None:
        """Claim the layout and start from the partition's committed checkpoint."""
        name, partition = self.projection.name, self.partition
        async with self.pool.acquire() as conn, conn.transaction():
            await claim_layout(conn, name, self.stream, partition.count)
            self.committed = self.position = await committed_checkpoint(
                conn, name, self.stream, partition
            )

    async def _open(self) -> EventReader:
        if self._reader is None:
            await self.load()
            self._reader = await self.store.reader(self.stream, self.position + 1)
        return self._reader

    async def step(self, timeout: float = 1.0, until: int | None = None) -> int:
        """Read at most one batch (ending at ``until`` if given) and apply what it handles;
        returns how many events it read past. With nothing to read, the checkpoint
        catches up with what was read past."""
        reader = await self._open()
        limit = self.batch_size if until is None else min(self.batch_size, until - self.position)
        try:
            batch = await reader.next_batch(limit, timeout) if limit > 0 else []
            if not batch:
                await self.flush()
                return 0
            whole = self.partition.count == 1
            return await self.apply(batch, by_type(batch if whole else filter(self._holds, batch)))
        except _Rewound:
            await self.reset()  # read on from the checkpoint we now find
            return 0
        except BaseException:
            await self.reset()  # re-read from what is committed, whatever happened
            raise

    def _holds(self, event: StoredEvent) -> bool:
        return self.partition.holds(event.subject)

    async def apply(self, batch: Sequence[StoredEvent], typed: Typed) -> int:
        """Apply what this runner handles of ``batch`` (the events after ``position``, in
        order; ``typed`` holds their bodies, and may hold other events too); returns how
        many events it read past. (Read models swapped in under it raise ``_Rewound``:
        ``step`` reads on from their checkpoint; a rebuild's fresh schema has none.)"""
        first, last = batch[0].seq, batch[-1].seq
        whole = self.partition.count == 1
        mine = [
            d
            for name in self._handled
            for d in typed.get(name, ())
            if first <= d.seq <= last and (whole or self.partition.holds(d.subject))
        ]
        if len(self._handled) > 1:
            mine.sort(key=_SEQ)
        if not mine and time.monotonic() < self._commit_due:
            await self._check_contiguous(self.position, batch)
            self.position = batch[-1].seq
            self._position_gauge.set(self.position)
            return len(batch)
        async with self.pool.acquire() as conn, conn.transaction():
            committed = await self._lock(conn)
            fresh = [e for e in batch if e.seq > committed]  # another runner got there first
            if not fresh:
                self.committed = self.position = committed
                return 0
            # What lies between the checkpoint and ``position`` was read past already.
            await self._check_contiguous(max(committed, self.position), fresh)
            decoded = [d for d in mine if d.seq > committed]
            if decoded:
                await self.projection.apply(conn, decoded)
            await self._move(conn, fresh[-1].seq)
        self._committed_at(fresh[-1].seq)
        APPLIED.labels(self.projection.name).inc(len(decoded))
        return len(fresh)

    def _committed_at(self, seq: int) -> None:
        self.committed = self.position = seq
        self._commit_due = time.monotonic() + self.IDLE_COMMIT_S
        self._position_gauge.set(seq)

    async def flush(self) -> None:
        """Commit the checkpoint over events read past but not committed yet."""
        if self.position <= self.committed:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            committed = await self._lock(conn)
            if committed < self.position:
                await self._move(conn, self.position)
        self._committed_at(max(committed, self.position))

    async def _lock(self, conn: asyncpg.Connection) -> int:
        """The committed position, row-locked until the transaction ends."""
        committed = await lock_checkpoint(conn, self.projection.name, self.stream, self.partition)
        if committed < self.committed:  # the read models were swapped for a rebuild
            raise _Rewound
        return committed

    async def _move(self, conn: asyncpg.Connection, seq: int) -> None:
        await move_checkpoint(conn, self.projection.name, self.stream, self.partition, seq)

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
                    f"{self.name}: expected {self.stream} sequence {expected}, got {event.seq}"
                )
            expected += 1

    async def reset(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()

    async def catch_up(self, target_seq: int, timeout: float = 60.0) -> None:
        """Run until the checkpoint reaches ``target_seq`` (replays, tests, rebuilds)."""
        deadline = time.monotonic() + timeout
        while self.committed < target_seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} stuck at {self.position}")
            await self.step(timeout=0.5, until=target_seq)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up with the stream until ``stop`` is set; survive outages of NATS or Postgres."""
        backoff = 0.2
        while not stop.is_set():
            try:
                read = await self.step(timeout=1.0)
                backoff = 0.2
                if 0 < read < self.batch_size and self.linger_s > 0:
                    # A projector wakes for every event otherwise: each paid request's
                    # events cost a transaction per projection, on cores the request needs.
                    await wait_or_stop(stop, self.linger_s)
            except TRANSIENT as exc:
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        with contextlib.suppress(*TRANSIENT):  # leave the checkpoint where we got to
            await self.step(timeout=0, until=self.position)
        await self.reset()


async def wait_for_projection(
    pool: asyncpg.Pool, projection: str, stream: str, seq: int, timeout: float = 5.0
) -> bool:
    """Read-your-writes: wait (bounded) until a projection (every partition of it) has
    applied sequence ``seq``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        async with pool.acquire() as conn:
            done = await conn.fetchval(
                "SELECT bool_and(last_seq >= $3) FROM projection_checkpoints"
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
