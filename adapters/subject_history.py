"""Every event of one ledger subject, in order, as stored (for audit exports)."""

from nats.js.errors import NotFoundError

from adapters.jetstream import JetStreamEventStore
from domain.envelope import StoredEvent
from domain.ports import EventStore

MAX_EVENTS = 10_000


async def subject_history(store: EventStore, subject: str, after_seq: int = 0) -> list[StoredEvent]:
    """The subject's events after stream sequence ``after_seq`` (all of them by default)."""
    stream = store.topology.stream_of(subject).name  # type: ignore[attr-defined]
    if isinstance(store, JetStreamEventStore):
        return await _jetstream_history(store, stream, subject, after_seq)
    _, last = await store.bounds(stream)
    reader = await store.reader(stream, after_seq + 1)
    found: list[StoredEvent] = []
    try:
        seen = after_seq
        while seen < last:
            batch = await reader.next_batch(1000, timeout=1.0)
            if not batch:
                break
            seen = batch[-1].seq
            found += [e for e in batch if e.subject == subject]
    finally:
        await reader.close()
    return found


async def _jetstream_history(
    store: JetStreamEventStore, stream: str, subject: str, after_seq: int
) -> list[StoredEvent]:
    """Hop from one message of the subject to the next (the server indexes subjects)."""
    found: list[StoredEvent] = []
    seq = after_seq + 1
    while len(found) < MAX_EVENTS:
        try:
            raw = await store.js.get_msg(stream, seq, subject=subject, next=True)
        except NotFoundError:
            break
        if raw.seq is None:
            break
        found.append(StoredEvent(stream, raw.seq, raw.subject or subject, raw.data or b""))
        seq = raw.seq + 1
    return found
