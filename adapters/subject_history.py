"""Every event of one ledger subject, in order, as stored (for audit exports)."""

from nats.js.errors import NotFoundError

from adapters.jetstream import JetStreamEventStore
from domain.envelope import StoredEvent
from domain.ports import EventStore

MAX_EVENTS = 10_000


async def subject_history(store: EventStore, subject: str) -> list[StoredEvent]:
    stream = store.topology.stream_of(subject).name  # type: ignore[attr-defined]
    if isinstance(store, JetStreamEventStore):
        return await _jetstream_history(store, stream, subject)
    _, last = await store.bounds(stream)
    reader = await store.reader(stream, 1)
    found: list[StoredEvent] = []
    try:
        seen = 0
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
    store: JetStreamEventStore, stream: str, subject: str
) -> list[StoredEvent]:
    """Hop from one message of the subject to the next (the server indexes subjects)."""
    found: list[StoredEvent] = []
    seq = 1
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
