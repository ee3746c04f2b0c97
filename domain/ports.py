"""What the domain needs from the outside world, as Protocols (adapters implement them)."""

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from domain.envelope import StoredEvent
from domain.payout_batches import BatchHead
from domain.sealing import Sealed


class AppendResult(NamedTuple):
    stream: str
    first_seq: int
    last_seq: int
    duplicate: bool = False
    """True when the log already held these events (a retried append). A retried batch
    that is no longer its subject's tail reports sequences 0: landed, position unknown."""


class ConcurrencyConflict(Exception):
    """Another writer appended first (to the subject, or to the stream); nothing was
    written. Reload and decide again."""

    def __init__(self, subject: str, tail: StoredEvent | None = None) -> None:
        super().__init__(f"{subject}: moved on since the events were decided")
        self.subject = subject
        self.tail = tail
        """The subject's last event as read once the append was refused, where the store
        read it anyway: the retry can decide on it without reading again."""


class StoreUnavailable(Exception):
    """The log cannot be reached right now; the caller may retry later."""


class EventReader(Protocol):
    async def next_batch(self, max_count: int, timeout: float) -> list[StoredEvent]:
        """The next events in stream order (empty when none arrived within ``timeout``)."""
        ...

    async def close(self) -> None: ...


class EventStore(Protocol):
    async def append(
        self,
        subject: str,
        events: Sequence[Sealed],
        expected_last_seq: int | None,
        *,
        expected_stream_seq: int | None = None,
    ) -> AppendResult:
        """All of ``events`` or none. ``expected_last_seq``: the subject's last stream
        sequence the events were decided on (0 = subject empty; None = unconditional);
        ``expected_stream_seq``: the whole stream's last sequence, for events that must
        land right after it (a checkpoint over everything before it). Raises
        ConcurrencyConflict when either moved. Retrying the same events is harmless."""
        ...

    async def append_many(self, items: Sequence[tuple[str, Sealed]]) -> list[AppendResult]:
        """Unconditional single-event appends, pipelined (high-volume evidence)."""
        ...

    async def append_each(
        self, items: Sequence[tuple[str, Sealed, int | None]]
    ) -> list[AppendResult | ConcurrencyConflict]:
        """Single-event appends, pipelined, each on condition that its subject's last
        sequence is the one given (as ``append``'s ``expected_last_seq``; None: none).
        A conflict refuses that event alone and comes back in its place; any other
        failure raises. Retrying the same events is harmless."""
        ...

    async def last(self, subject: str) -> StoredEvent | None:
        """The latest event on a subject, read directly."""
        ...

    async def bounds(self, stream: str) -> tuple[int, int]:
        """First and last sequence of a stream (0, 0 when empty)."""
        ...

    async def reader(self, stream: str, from_seq: int) -> EventReader: ...


class NonceRegistry(Protocol):
    async def first_use(self, scope: str, nonce: str) -> bool:
        """True the first time ``nonce`` is seen for ``scope`` within the replay window,
        False for every later use, whichever API process sees it."""
        ...


class ProtocolStatus(NamedTuple):
    """What the protocol registry says about one node, and where that came from."""

    registered: bool
    active: bool
    stake_wei: int
    observed_at: datetime
    source: str
    event_id: str | None = None
    seq: int | None = None


class ProtocolRegistry(Protocol):
    """Registration, activity and stake of nodes; an on-chain reader can implement it."""

    async def status(self, node_id: str) -> ProtocolStatus | None: ...


class SettlementTarget(Protocol):
    """Where payout batches are settled. A target is told a batch's root, count and total;
    the rows stay with us (each provable against the root). Both calls must be idempotent
    for one batch: a retry returns what the first call recorded."""

    @property
    def name(self) -> str:
        """Recorded in ``PayoutBatchSubmitted.target`` (e.g. ``local-anchor``)."""
        ...

    async def submit(self, batch: BatchHead) -> str:
        """Record the batch with the target; returns the reference it was recorded under."""
        ...

    async def finalize(self, batch: BatchHead, reference: str) -> str:
        """Confirm the batch submitted under ``reference``; returns the confirmation."""
        ...
