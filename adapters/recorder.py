"""The write path: decide on the latest state, seal, append conditionally, retry on races."""

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from domain.decoding import Decoded, decode_stored, stored_hash
from domain.events import Event
from domain.ports import AppendResult, ConcurrencyConflict, EventStore
from domain.sealing import seal
from domain.signing import Signer
from domain.streams import Topology

Decide = Callable[[Decoded | None], Sequence[Event]]
"""Given the subject's latest event (None for a new aggregate), the events to append."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Recorder:
    def __init__(
        self,
        store: EventStore,
        signer: Signer,
        topology: Topology,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_attempts: int = 8,
    ) -> None:
        self.store = store
        self.signer = signer
        self.topology = topology
        self.clock = clock
        self.max_attempts = max_attempts

    async def record(self, subject: str, decide: Decide) -> AppendResult | None:
        """Append what ``decide`` returns, atomically, chained to the subject's tail.

        A concurrent writer makes the append fail without writing; we then reload and
        decide again (bounded), so every decision is made on the state it extends.
        Returns None when ``decide`` decided nothing.
        """
        for attempt in range(self.max_attempts):
            tail = await self.store.last(subject)
            events = decide(None if tail is None else decode_stored(tail))
            if not events:
                return None
            sealed = seal(
                subject,
                events,
                prev_hash=None if tail is None else stored_hash(tail),
                signer=self.signer,
                now=self.clock(),
            )
            try:
                return await self.store.append(subject, sealed, tail.seq if tail else 0)
            except ConcurrencyConflict:
                if attempt + 1 == self.max_attempts:
                    raise
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))  # noqa: S311
        raise AssertionError("unreachable")

    async def record_evidence(self, items: Sequence[tuple[str, Event]]) -> list[AppendResult]:
        """High-volume, unchained evidence (heartbeats): pipelined, unconditional appends."""
        now = self.clock()
        sealed = [
            (
                subject,
                seal(subject, [event], prev_hash=None, signer=self.signer, now=now, chained=False)[
                    0
                ],
            )
            for subject, event in items
        ]
        return await self.store.append_many(sealed)
