"""One suite, every event store: the in-memory fake must behave like JetStream."""

import asyncio
import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from adapters.jetstream import JetStreamEventStore
from adapters.memory_store import InMemoryEventStore
from adapters.recorder import Recorder
from domain.decoding import Decoded, decode_stored
from domain.envelope import StoredEvent
from domain.events import Event, HeartbeatRecorded
from domain.ports import AppendResult, ConcurrencyConflict, EventStore
from domain.sealing import Sealed, seal
from domain.signing import Keyring, Signer
from domain.streams import Topology
from domain.verification import LogVerifier
from tests.conftest import Servers
from tests.support import Refusals, enrolled, heartbeat, jetstream_store

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "jetstream"])
async def store(
    request: pytest.FixtureRequest, topology: Topology, servers: Servers
) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore(topology)
    else:
        async with jetstream_store(servers.nats_url, topology) as js:
            yield js


def sealed(
    subject: str, signer: Signer, events: list[Event], prev: str | None = None
) -> list[Sealed]:
    return seal(subject, events, prev_hash=prev, signer=signer, now=NOW)


async def enroll(store: EventStore, topology: Topology, signer: Signer, node: str) -> None:
    """Introduce the node's key to the log, so its signed evidence can be checked."""
    subject = topology.subject("enrollment", node)
    await store.append(subject, sealed(subject, signer, [enrolled(node, signer)]), 0)


async def read_all(store: EventStore, stream: str) -> list[int]:
    reader = await store.reader(stream, 1)
    seqs: list[int] = []
    while batch := await reader.next_batch(1000, 0.2):
        seqs.extend(e.seq for e in batch)
    await reader.close()
    return seqs


async def test_append_then_last_and_bounds(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    subject = topology.subject("node", "n1")
    assert await store.last(subject) is None
    first = sealed(subject, signer, [enrolled("n1", signer)])
    result = await store.append(subject, first, 0)
    assert (result.first_seq, result.last_seq, result.duplicate) == (1, 1, False)
    last = await store.last(subject)
    assert last is not None and last.seq == 1 and last.data == first[0].data
    assert await store.bounds(topology.ledger.name) == (1, 1)
    assert await store.bounds(topology.heartbeats.name) == (0, 0)


async def test_duplicate_event_id_is_stored_once(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    subject = topology.subject("node", "n1")
    events = sealed(subject, signer, [enrolled("n1", signer)])
    await store.append(subject, events, 0)
    again = await store.append(subject, events, 0)  # a retry after a lost ack
    assert again.duplicate and again.last_seq == 1
    batch = sealed(subject, signer, [heartbeat("n1", 1, signer), heartbeat("n1", 2, signer)])
    await store.append(subject, batch, 1)
    retried = await store.append(subject, batch, 1)
    assert retried.duplicate and (retried.first_seq, retried.last_seq) == (2, 3)
    assert await read_all(store, topology.ledger.name) == [1, 2, 3]


async def test_stale_expected_sequence_conflicts_and_writes_nothing(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    subject = topology.subject("node", "n1")
    await store.append(subject, sealed(subject, signer, [enrolled("n1", signer)]), 0)
    with pytest.raises(ConcurrencyConflict) as refused:
        await store.append(subject, sealed(subject, signer, [heartbeat("n1", 1, signer)]), 0)
    assert refused.value.tail == await store.last(subject)  # the retry decides on it
    with pytest.raises(ConcurrencyConflict):  # a batch: all or nothing
        two = [heartbeat("n1", 1, signer), heartbeat("n1", 2, signer)]
        await store.append(subject, sealed(subject, signer, two), 7)
    assert await read_all(store, topology.ledger.name) == [1]


async def test_an_expected_stream_sequence_pins_where_an_event_lands(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    a, b = topology.subject("node", "a"), topology.subject("checkpoint", "ledger")
    await store.append(a, sealed(a, signer, [enrolled("a", signer)]), 0)
    with pytest.raises(ConcurrencyConflict):
        await store.append(b, sealed(b, signer, [enrolled("b", signer)]), 0, expected_stream_seq=0)
    landed = await store.append(
        b, sealed(b, signer, [enrolled("b", signer)]), 0, expected_stream_seq=1
    )
    assert (landed.first_seq, landed.last_seq) == (2, 2)
    assert await read_all(store, topology.ledger.name) == [1, 2]


async def test_other_subjects_do_not_conflict(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    a, b = topology.subject("node", "a"), topology.subject("node", "b")
    await store.append(a, sealed(a, signer, [enrolled("a", signer)]), 0)
    result = await store.append(b, sealed(b, signer, [enrolled("b", signer)]), 0)
    assert result.last_seq == 2


@pytest.mark.parametrize("round_", range(10))
async def test_racing_writers_exactly_one_wins(
    store: EventStore, topology: Topology, signer: Signer, round_: int
) -> None:
    subject = topology.subject("customer", f"c{round_}")
    await store.append(subject, sealed(subject, signer, [enrolled("c", signer)]), 0)

    async def write(i: int) -> bool:
        try:
            await store.append(subject, sealed(subject, signer, [heartbeat("c", i, signer)]), 1)
        except ConcurrencyConflict:
            return False
        return True

    wins = await asyncio.gather(*(write(i) for i in range(8)))
    assert sum(wins) == 1
    last = await store.last(subject)
    assert last is not None and last.seq == 2


async def test_pipelined_appends_keep_order(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    items = []
    for i in range(500):
        subject = topology.heartbeat_subject(f"n{i % 7}")
        items.append(
            (
                subject,
                seal(
                    subject,
                    [heartbeat(f"n{i % 7}", i, signer)],
                    prev_hash=None,
                    signer=signer,
                    now=NOW,
                    chained=False,
                )[0],
            )
        )
    results = await store.append_many(items)
    assert [r.last_seq for r in results] == list(range(1, 501))
    again = await store.append_many(items[:10])
    assert all(r.duplicate for r in again)
    assert await read_all(store, topology.heartbeats.name) == list(range(1, 501))


async def test_conditional_pipelined_appends_refuse_only_the_stale_ones(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    def beat(node: str, n: int) -> tuple[str, Sealed]:
        subject = topology.heartbeat_subject(node)
        [one] = seal(
            subject, [heartbeat(node, n, signer)], prev_hash=None, signer=signer, now=NOW,
            chained=False,
        )  # fmt: skip
        return subject, one

    (a, a1), (b, b1) = beat("a", 1), beat("b", 1)
    assert [r.last_seq for r in await store.append_many([(a, a1), (b, b1)])] == [1, 2]
    (_, a2), (_, b2), (_, a3), (c, c1) = beat("a", 2), beat("b", 2), beat("a", 3), beat("c", 1)
    results = await store.append_each([(a, a2, 1), (b, b2, 1), (a, a3, 1), (c, c1, 0)])
    assert isinstance(results[1], ConcurrencyConflict)  # b's last is 2, not 1
    assert isinstance(results[2], ConcurrencyConflict)  # a2 just moved a on
    assert [results[1].tail, results[2].tail] == [await store.last(b), await store.last(a)]
    assert [(r.first_seq, r.last_seq) for r in (results[0], results[3])] == [(3, 3), (4, 4)]
    again = await store.append_each([(a, a2, 1)])
    assert isinstance(again[0], AppendResult) and again[0].duplicate
    assert await read_all(store, topology.heartbeats.name) == [1, 2, 3, 4]


async def test_reader_resumes_from_a_sequence_and_waits(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    subject = topology.subject("node", "n1")
    prev = None
    for i in range(5):
        batch = sealed(subject, signer, [heartbeat("n1", i, signer)], prev)
        await store.append(subject, batch, i)
        prev = batch[-1].hash
    reader = await store.reader(topology.ledger.name, 3)
    assert [e.seq for e in await reader.next_batch(10, 1.0)] == [3, 4, 5]
    assert await reader.next_batch(10, 0.1) == []
    late = sealed(subject, signer, [heartbeat("n1", 9, signer)], prev)
    pending = asyncio.create_task(reader.next_batch(10, 5.0))
    await asyncio.sleep(0.05)
    await store.append(subject, late, 5)
    assert [e.seq for e in await pending] == [6]
    await reader.close()


async def test_recorder_serializes_decisions_and_chains_them(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    """Concurrent read-decide-append loops lose no update, and the chain verifies."""
    recorder = Recorder(store, signer, topology, max_attempts=50)
    subject = topology.subject("node", "counter")
    await enroll(store, topology, signer, "counter")

    def next_heartbeat(tail: Decoded | None) -> list[Event]:
        seq = 0 if tail is None else tail.event.heartbeat_seq + 1  # type: ignore[attr-defined]
        return [heartbeat("counter", seq, signer)]

    await asyncio.gather(*(recorder.record(subject, next_heartbeat) for _ in range(12)))
    reader = await store.reader(topology.ledger.name, 1)
    events = await reader.next_batch(100, 0.5)
    await reader.close()
    counters = [decode_stored(e).event for e in events]
    assert [c.heartbeat_seq for c in counters if isinstance(c, HeartbeatRecorded)] == list(
        range(12)
    )
    verifier = LogVerifier(Keyring([signer.public_key]))
    assert [p for e in events for p in verifier.feed(e)] == []
    assert verifier.verified == 13  # the enrollment and 12 heartbeats


async def test_recorders_in_two_processes_never_extend_a_stale_tail(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    """Each recorder remembers the tail it wrote; the other one moving it on must not fork
    the chain or lose a decision."""
    first, second = (Recorder(store, signer, topology) for _ in range(2))
    subject = topology.subject("node", "shared")
    await enroll(store, topology, signer, "shared")

    def next_heartbeat(tail: Decoded | None) -> list[Event]:
        seq = 0 if tail is None else tail.event.heartbeat_seq + 1  # type: ignore[attr-defined]
        return [heartbeat("shared", seq, signer)]

    for recorder in (first, second, first, first, second, first):
        await recorder.record(subject, next_heartbeat)
    reader = await store.reader(topology.ledger.name, 1)
    events = await reader.next_batch(100, 0.5)
    await reader.close()
    beats = [decode_stored(e).event for e in events]
    seqs = [b.heartbeat_seq for b in beats if isinstance(b, HeartbeatRecorded)]
    assert seqs == list(range(6))
    verifier = LogVerifier(Keyring([signer.public_key]))
    assert [p for e in events for p in verifier.feed(e)] == []


@pytest.mark.parametrize("implementation", [InMemoryEventStore, JetStreamEventStore])
def test_every_store_implements_the_whole_port(implementation: type) -> None:
    """The same methods with the same parameters as domain.ports.EventStore."""
    port = {n: m for n, m in vars(EventStore).items() if inspect.iscoroutinefunction(m)}
    assert set(port) == {"append", "append_many", "append_each", "last", "bounds", "reader"}
    for name, method in port.items():
        assert inspect.iscoroutinefunction(getattr(implementation, name)), name
        expected = list(inspect.signature(method).parameters)
        assert list(inspect.signature(getattr(implementation, name)).parameters) == expected


async def test_a_recorder_told_of_anothers_appends_decides_on_them_without_a_refusal(
    store: EventStore, topology: Topology, signer: Signer
) -> None:
    """What SharedTails does between processes: each append's tail, announced to the
    other recorder, is the tail it decides on next; nothing is refused and redone."""
    first, second = (Recorder(store, signer, topology) for _ in range(2))
    first.announce, second.announce = second.observe, first.observe
    subject = topology.subject("node", "shared")
    await enroll(store, topology, signer, "shared")
    refused = Refusals(store)

    def next_heartbeat(tail: Decoded | None) -> list[Event]:
        seq = 0 if tail is None else tail.event.heartbeat_seq + 1  # type: ignore[attr-defined]
        return [heartbeat("shared", seq, signer)]

    await first.record(subject, next_heartbeat)
    await second.record(subject, next_heartbeat)  # it remembers nothing yet: it reads
    for recorder in (first, second, second, first, second, first):
        await recorder.record(subject, next_heartbeat)
    assert refused.count == 0
    last = await store.last(subject)
    assert last is not None and decode_stored(last).event.heartbeat_seq == 7  # type: ignore[attr-defined]
    older = StoredEvent(last.stream, last.seq - 1, subject, last.data)
    first.observe(older)  # a late notice never takes a recorder back
    assert not first.behind(subject, last.seq) and first.behind(subject, last.seq + 1)
    first.observe(StoredEvent(last.stream, last.seq + 5, "elsewhere", last.data))
    assert not first.behind("elsewhere", last.seq + 6)  # a subject it never wrote: ignored
