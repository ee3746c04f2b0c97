"""The write path: decide on the latest state, seal, append conditionally, retry on races."""

import asyncio
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from domain.decoding import Decoded, decode_lazily, stored_hash
from domain.envelope import StoredEvent
from domain.events import Event
from domain.ports import AppendResult, ConcurrencyConflict, EventStore
from domain.sealing import Sealed, seal
from domain.signing import Signer
from domain.streams import Topology

Decide = Callable[[Decoded | None], Sequence[Event]]
"""Given the subject's latest event (None for a new aggregate), the events to append."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Recorder:
    TAILS_KEPT = 10_000
    """Subjects whose last event we remember, most recently used first."""

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
        self._tails: OrderedDict[str, StoredEvent] = OrderedDict()
        self.announce: Callable[[StoredEvent], None] | None = None
        """Told each tail this recorder appends (see ``SharedTails``)."""

    async def record(
        self, subject: str, decide: Decide, *, expected_stream_seq: int | None = None
    ) -> AppendResult | None:
        """Append what ``decide`` returns, atomically, chained to the subject's tail.

        A concurrent writer makes the append fail without writing; we then reload and
        decide again (bounded), so every decision is made on the state it extends.
        The tail we appended last is remembered: if another process has moved the subject
        on since, the conditional append refuses it and the retry reads the real tail.
        Returns None when ``decide`` decided nothing. With ``expected_stream_seq`` the events
        must land right after that stream sequence: one attempt, since only the caller
        can re-read the stream and decide again.
        """
        attempts = 1 if expected_stream_seq is not None else self.max_attempts
        raced = 0
        known: StoredEvent | None = None  # the tail as read by the store refusing us
        for attempt in range(attempts):
            remembered = self._tails.get(subject) if attempt == 0 else None
            tail = remembered or known or await self.store.last(subject)
            known = None
            events = decide(None if tail is None else decode_lazily(tail))
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
                result = await self.store.append(
                    subject,
                    sealed,
                    tail.seq if tail else 0,
                    expected_stream_seq=expected_stream_seq,
                )
            except ConcurrencyConflict as conflict:
                self._tails.pop(subject, None)
                if attempt + 1 == attempts:
                    raise
                if remembered is None:  # a writer passed the tail we had just read: back off
                    raced += 1
                    await asyncio.sleep(random.uniform(0, 0.002 * 2 ** (raced - 1)))  # noqa: S311
                else:  # another process moved the subject on since we wrote: retry now, on
                    known = conflict.tail  # the tail the refusal read (if it did)
                continue
            appended = StoredEvent(result.stream, result.last_seq, subject, sealed[-1].data)
            self._remember(appended)
            if self.announce is not None and appended.seq:
                self.announce(appended)
            return result
        raise AssertionError("unreachable")

    def forget(self, subject: str) -> None:
        """Read the subject's tail from the log next time (a decision that appended
        nothing was made on the remembered tail, which another process may have passed)."""
        self._tails.pop(subject, None)

    def behind(self, subject: str, seq: int) -> bool:
        """Whether we remember the subject's tail, at a sequence before ``seq``."""
        remembered = self._tails.get(subject)
        return remembered is not None and remembered.seq < seq

    def observe(self, tail: StoredEvent) -> None:
        """Another writer appended ``tail``: decide on it next, if it is newer than the
        tail we remember (a subject we do not write stays unremembered). Where it is not
        the last after all, the conditional append refuses it as any stale tail; that it
        is a genuine event is for the caller to check."""
        if self.behind(tail.subject, tail.seq):
            self._tails[tail.subject] = tail

    def _remember(self, tail: StoredEvent) -> None:
        if tail.seq == 0:  # a retried batch whose position is unknown
            self._tails.pop(tail.subject, None)
            return
        remembered = self._tails.get(tail.subject)
        if remembered is not None and remembered.seq > tail.seq:
            return  # observed meanwhile: another writer's, after ours
        self._tails[tail.subject] = tail
        self._tails.move_to_end(tail.subject)
        if len(self._tails) > self.TAILS_KEPT:
            self._tails.popitem(last=False)

    async def record_evidence(self, items: Sequence[tuple[str, Event]]) -> list[AppendResult]:
        """High-volume, unchained evidence (heartbeats): pipelined, unconditional appends."""
        now = self.clock()
        return await self.store.append_many(
            [(subject, self._unchained(subject, event, now)) for subject, event in items]
        )

    async def record_evidence_each(
        self, items: Sequence[tuple[str, Event, int | None]]
    ) -> list[AppendResult | ConcurrencyConflict]:
        """As ``record_evidence``, each event on condition that its subject's last sequence
        is the one given; a conflict refuses that event alone."""
        now = self.clock()
        return await self.store.append_each(
            [(subject, self._unchained(subject, event, now), seq) for subject, event, seq in items]
        )

    def _unchained(self, subject: str, event: Event, now: datetime) -> Sealed:
        return seal(subject, [event], prev_hash=None, signer=self.signer, now=now, chained=False)[0]
