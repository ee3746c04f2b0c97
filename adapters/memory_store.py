"""An in-memory event store with the JetStream store's semantics, for fast tests.

It passes the same contract suite as the real store (tests/contract). It keeps no
retention window and no dedupe window: within a test both are effectively infinite.
"""

import asyncio
from collections.abc import Sequence

from domain.envelope import StoredEvent
from domain.ports import AppendResult, ConcurrencyConflict, EventReader
from domain.sealing import Sealed
from domain.streams import Topology


class _Stream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[StoredEvent] = []
        self.last_by_subject: dict[str, int] = {}
        self.seq_by_id: dict[str, int] = {}
        self.grew = asyncio.Condition()


class InMemoryEventStore:
    def __init__(self, topology: Topology | None = None) -> None:
        self.topology = topology or Topology()
        self._streams = {spec.name: _Stream(spec.name) for spec in self.topology.streams}

    def _stream_for(self, subject: str) -> _Stream:
        return self._streams[self.topology.stream_of(subject).name]

    async def append(
        self,
        subject: str,
        events: Sequence[Sealed],
        expected_last_seq: int | None,
        *,
        expected_stream_seq: int | None = None,
    ) -> AppendResult:
        stream = self._stream_for(subject)
        known = [stream.seq_by_id[e.event_id] for e in events if e.event_id in stream.seq_by_id]
        if known:
            return AppendResult(stream.name, min(known), max(known), duplicate=True)
        current = stream.last_by_subject.get(subject, 0)
        if expected_last_seq is not None and current != expected_last_seq:
            raise ConcurrencyConflict(subject, stream.events[current - 1] if current else None)
        if expected_stream_seq is not None and len(stream.events) != expected_stream_seq:
            raise ConcurrencyConflict(subject)
        first = len(stream.events) + 1
        for sealed in events:
            seq = len(stream.events) + 1
            stream.events.append(StoredEvent(stream.name, seq, subject, sealed.data))
            stream.seq_by_id[sealed.event_id] = seq
            stream.last_by_subject[subject] = seq
        async with stream.grew:
            stream.grew.notify_all()
        return AppendResult(stream.name, first, len(stream.events))

    async def append_many(self, items: Sequence[tuple[str, Sealed]]) -> list[AppendResult]:
        return [await self.append(subject, [sealed], None) for subject, sealed in items]

    async def append_each(
        self, items: Sequence[tuple[str, Sealed, int | None]]
    ) -> list[AppendResult | ConcurrencyConflict]:
        results: list[AppendResult | ConcurrencyConflict] = []
        for subject, sealed, expected in items:
            try:
                results.append(await self.append(subject, [sealed], expected))
            except ConcurrencyConflict as conflict:
                results.append(conflict)
        return results

    async def last(self, subject: str) -> StoredEvent | None:
        stream = self._stream_for(subject)
        seq = stream.last_by_subject.get(subject)
        return None if seq is None else stream.events[seq - 1]

    async def bounds(self, stream: str) -> tuple[int, int]:
        count = len(self._streams[stream].events)
        return (1, count) if count else (0, 0)

    async def reader(self, stream: str, from_seq: int) -> EventReader:
        return _Reader(self._streams[stream], from_seq)


class _Reader:
    def __init__(self, stream: _Stream, from_seq: int) -> None:
        self._stream = stream
        self._next = max(from_seq, 1)

    async def next_batch(self, max_count: int, timeout: float) -> list[StoredEvent]:
        stream = self._stream
        if len(stream.events) < self._next:
            async with stream.grew:
                try:
                    await asyncio.wait_for(
                        stream.grew.wait_for(lambda: len(stream.events) >= self._next), timeout
                    )
                except TimeoutError:
                    return []
        batch = stream.events[self._next - 1 : self._next - 1 + max_count]
        self._next += len(batch)
        return batch

    async def close(self) -> None:
        return None
