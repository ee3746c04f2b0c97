"""Projections over real JetStream and PostgreSQL: exactly-once under crashes and races."""

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from adapters.jetstream import JetStreamEventStore
from adapters.postgres import DatabaseUnavailable, create_pool, require_migrated
from adapters.projector import ProjectionRunner, SequenceGap, wait_for_projection
from adapters.recorder import Recorder
from adapters.services import rebuild
from adapters.settings import Settings
from adapters.stream_replay import StreamReplay
from domain.decoding import Decoded
from domain.envelope import StoredEvent
from domain.events import Event
from domain.ports import EventReader
from domain.signing import Signer
from domain.streams import Topology
from projections.catalog import all_projections
from projections.db import Database
from projections.heartbeats import HeartbeatsProjection
from projections.routes import RouteProbesProjection
from tests.conftest import Servers
from tests.support import enrolled, heartbeat

NODES = 20


async def fill(store: JetStreamEventStore, topology: Topology, signer: Signer, beats: int) -> None:
    recorder = Recorder(store, signer, topology)
    for n in range(NODES):
        node = f"n{n}"
        event = enrolled(node, signer)

        def decide(_: Decoded | None, e: Event = event) -> list[Event]:
            return [e]

        await recorder.record(topology.subject("node", node), decide)
    items = [
        (topology.heartbeat_subject(f"n{i % NODES}"), heartbeat(f"n{i % NODES}", i, signer))
        for i in range(beats)
    ]
    await recorder.record_evidence(items)


async def project_all(pool: asyncpg.Pool, store: JetStreamEventStore, topology: Topology) -> None:
    for projection in all_projections():
        runner = ProjectionRunner(pool, store, topology, projection, batch_size=700)
        _, head = await store.bounds(runner.stream)
        await runner.catch_up(head)
        await runner.reset()


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple[object, ...]]]:
    async with pool.acquire() as conn:
        return {
            table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]
            for table in ("nodes", "node_heartbeats", "signer_keys", "projection_checkpoints")
        }


def settings_for(servers: Servers, database_url: str, topology: Topology, tmp: Path) -> Settings:
    return Settings(
        nats_url=servers.nats_url,
        database_url=database_url,
        stream_prefix=topology.prefix,
        data_dir=tmp,
    )


@pytest.mark.parametrize("jobs", [1, 2])
async def test_projection_matches_a_clean_rebuild(
    jobs: int,
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    await fill(js_store, topology, signer, beats=3000)
    await project_all(pool, js_store, topology)
    tables = await snapshot(pool)
    assert len(tables["nodes"]) == NODES
    assert sum(r[5] for r in tables["node_heartbeats"]) == 3000  # heartbeat_count
    report = await rebuild(settings_for(servers, database_url, topology, tmp_path), jobs=jobs)
    assert report.differences == []
    assert report.events >= 3000 + NODES


async def test_rebuild_reports_a_differing_row(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    await fill(js_store, topology, signer, beats=100)
    await project_all(pool, js_store, topology)
    await pool.execute("UPDATE nodes SET agent_version = 'tampered' WHERE node_id = 'n3'")
    report = await rebuild(settings_for(servers, database_url, topology, tmp_path))
    [difference] = report.differences
    assert difference.table == "nodes"
    assert any("tampered" in row for row in difference.sample)


class CountingStore:
    """The store, counting the events its readers hand out."""

    def __init__(self, inner: JetStreamEventStore) -> None:
        self.inner, self.read = inner, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def reader(self, stream: str, from_seq: int) -> EventReader:
        inner, outer = await self.inner.reader(stream, from_seq), self

        class Counting:
            async def next_batch(self, max_count: int, timeout: float) -> list[StoredEvent]:
                batch = await inner.next_batch(max_count, timeout)
                outer.read += len(batch)
                return batch

            async def close(self) -> None:
                await inner.close()

        return Counting()


async def test_one_read_feeds_every_projection_each_to_its_own_target(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, pool: asyncpg.Pool
) -> None:
    await fill(js_store, topology, signer, beats=1200)
    stream = topology.heartbeats.name
    _, head = await js_store.bounds(stream)
    store: Any = CountingStore(js_store)
    beats = ProjectionRunner(pool, store, topology, HeartbeatsProjection())
    probes = ProjectionRunner(pool, store, topology, RouteProbesProjection())
    replay = StreamReplay(store, stream, [(beats, 500), (probes, head)], batch_size=256)
    assert await replay.run() == head == store.read  # the stream read once, not per runner
    assert await pool.fetchval("SELECT sum(heartbeat_count) FROM node_heartbeats") == 500
    checkpoints = dict(await pool.fetch("SELECT projection, last_seq FROM projection_checkpoints"))
    assert checkpoints == {beats.projection.name: 500, probes.projection.name: head}
    await beats.catch_up(head)  # on alone from its target: as if it had run all along
    await beats.reset()
    assert await pool.fetchval("SELECT sum(heartbeat_count) FROM node_heartbeats") == 1200


class CrashingProjection:
    """Writes its rows, then dies before the transaction commits (on the n-th batch)."""

    def __init__(self, crash_on_batch: int) -> None:
        self.inner = HeartbeatsProjection()
        inner = self.inner
        self.name, self.stream, self.tables = inner.name, inner.stream, inner.tables
        self.handles = inner.handles
        self.batches = 0
        self.crash_on_batch = crash_on_batch

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        await self.inner.apply(db, batch)
        self.batches += 1
        if self.batches == self.crash_on_batch:
            raise RuntimeError("simulated crash mid-batch")


async def test_crash_mid_batch_then_restart_applies_each_event_once(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    database_url: str,
) -> None:
    await fill(js_store, topology, signer, beats=2500)
    _, head = await js_store.bounds(topology.heartbeats.name)
    crashing = ProjectionRunner(pool, js_store, topology, CrashingProjection(3), batch_size=500)
    with pytest.raises(RuntimeError, match="mid-batch"):
        await crashing.catch_up(head)
    assert crashing.position == 1000  # two batches committed, the third rolled back
    restarted = ProjectionRunner(pool, js_store, topology, HeartbeatsProjection(), batch_size=500)
    await restarted.catch_up(head)
    count = await pool.fetchval("SELECT sum(heartbeat_count) FROM node_heartbeats")
    assert count == 2500


async def test_events_a_projection_does_not_handle_cost_it_no_transaction_per_batch(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, pool: asyncpg.Pool
) -> None:
    await fill(js_store, topology, signer, beats=2500)  # heartbeats: no route probes
    _, head = await js_store.bounds(topology.heartbeats.name)
    runner = ProjectionRunner(pool, js_store, topology, RouteProbesProjection(), batch_size=500)

    async def checkpoint() -> int:
        return int(
            await pool.fetchval(
                "SELECT last_seq FROM projection_checkpoints WHERE projection = 'route_probes'"
            )
        )

    while runner.position < head:
        await runner.step(timeout=1.0)
    assert await checkpoint() == 500  # the first batch committed; the rest were read past
    await runner.step(timeout=0.05)  # the stream is quiet: the checkpoint catches up
    assert await checkpoint() == head == runner.committed
    await runner.reset()


async def test_two_runners_racing_apply_each_event_once(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
) -> None:
    await fill(js_store, topology, signer, beats=4000)
    _, head = await js_store.bounds(topology.heartbeats.name)
    runners = [
        ProjectionRunner(pool, js_store, topology, HeartbeatsProjection(), batch_size=300)
        for _ in range(2)
    ]
    await asyncio.gather(*(r.catch_up(head) for r in runners))
    assert await pool.fetchval("SELECT sum(heartbeat_count) FROM node_heartbeats") == 4000


class SkippingStore:
    """A store whose reader loses event 3: the projector must refuse to continue."""

    def __init__(self, inner: JetStreamEventStore) -> None:
        self.inner = inner

    async def reader(self, stream: str, from_seq: int) -> "SkippingReader":
        return SkippingReader(await self.inner.reader(stream, from_seq))

    async def bounds(self, stream: str) -> tuple[int, int]:
        return await self.inner.bounds(stream)


class SkippingReader:
    def __init__(self, inner: object) -> None:
        self.inner = inner

    async def next_batch(self, max_count: int, timeout: float) -> list[StoredEvent]:
        batch = await self.inner.next_batch(max_count, timeout)  # type: ignore[attr-defined]
        return [e for e in batch if e.seq != 3]

    async def close(self) -> None:
        await self.inner.close()  # type: ignore[attr-defined]


async def test_a_gap_in_sequences_stops_the_projection(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
) -> None:
    await fill(js_store, topology, signer, beats=10)
    runner = ProjectionRunner(
        pool,
        SkippingStore(js_store),
        topology,
        all_projections()[1],
    )
    with pytest.raises(SequenceGap, match=r"expected .* sequence 3, got 4"):
        await runner.step()
    assert await pool.fetchval("SELECT count(*) FROM nodes") == 0


async def test_read_your_writes_waits_for_the_projection(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
) -> None:
    await fill(js_store, topology, signer, beats=0)
    _, head = await js_store.bounds(topology.ledger.name)
    stream = topology.ledger.name
    assert not await wait_for_projection(pool, "nodes", stream, head, timeout=0.05)
    runner = ProjectionRunner(pool, js_store, topology, all_projections()[1])
    waiting = asyncio.create_task(wait_for_projection(pool, "nodes", stream, head, timeout=5))
    await runner.catch_up(head)
    assert await waiting


async def test_an_unmigrated_database_is_refused(servers: Servers) -> None:
    conn = await asyncpg.connect(servers.admin_dsn)
    await conn.execute("DROP DATABASE IF EXISTS unmigrated")
    await conn.execute("CREATE DATABASE unmigrated")
    await conn.close()
    pool = await create_pool(servers.dsn("unmigrated"))
    with pytest.raises(DatabaseUnavailable, match="run `b3iq migrate`"):
        await require_migrated(pool)
    await pool.close()


async def test_a_swapped_in_rebuild_takes_over_under_a_running_projector(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    await fill(js_store, topology, signer, beats=500)
    await pool.execute(
        "INSERT INTO admin_tokens (token_id, name, role, token_hash, created_at)"
        " VALUES ('t1', 'ops', 'admin', 'h', now())"
    )
    runner = ProjectionRunner(pool, js_store, topology, HeartbeatsProjection(), batch_size=200)
    _, head = await js_store.bounds(topology.heartbeats.name)
    await runner.catch_up(head)
    report = await rebuild(settings_for(servers, database_url, topology, tmp_path), swap=True)
    assert report.retired is not None
    assert report.differences == []
    await fill(js_store, topology, signer, beats=300)  # more arrive after the swap
    _, head = await js_store.bounds(topology.heartbeats.name)
    await runner.catch_up(head)
    assert await pool.fetchval("SELECT sum(heartbeat_count) FROM node_heartbeats") == 800
    assert await pool.fetchval("SELECT count(*) FROM admin_tokens") == 1  # carried over


async def test_a_runner_whose_tables_were_rewound_reads_on_from_the_checkpoint(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, pool: asyncpg.Pool
) -> None:
    await fill(js_store, topology, signer, beats=500)
    runner = ProjectionRunner(pool, js_store, topology, HeartbeatsProjection(), batch_size=200)
    _, head = await js_store.bounds(topology.heartbeats.name)
    await runner.catch_up(head)
    # What a swap to read models built up to an earlier sequence looks like to a runner.
    await pool.execute("TRUNCATE node_heartbeats")
    await pool.execute("UPDATE projection_checkpoints SET last_seq = 0")
    await fill(js_store, topology, signer, beats=300)
    _, head = await js_store.bounds(topology.heartbeats.name)
    await runner.catch_up(head)
    assert await pool.fetchval("SELECT sum(heartbeat_count) FROM node_heartbeats") == 800


async def test_a_rebuild_in_processes_keeps_the_deployments_heartbeat_retention(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    """Replay processes connect with the deployment's whole topology: connecting declares
    the streams, and a default one would reset the heartbeat stream's max age."""
    await fill(js_store, topology, signer, beats=50)
    await project_all(pool, js_store, topology)
    settings = msgspec.structs.replace(
        settings_for(servers, database_url, topology, tmp_path), heartbeat_retention_s=3600.0
    )
    assert (await rebuild(settings, jobs=2)).differences == []
    info = await js_store.js.stream_info(topology.heartbeats.name)
    assert info.config.max_age == 3600.0


async def test_after_a_partial_batch_a_runner_lingers_and_reads_what_came_meanwhile(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, pool: asyncpg.Pool
) -> None:
    await fill(js_store, topology, signer, beats=10)
    heartbeats = next(p for p in all_projections() if p.name == "heartbeats")
    runner = ProjectionRunner(pool, js_store, topology, heartbeats, linger_s=0.5)
    reads: list[int] = []
    backlog_read = asyncio.Event()
    step = runner.step

    async def counted(timeout: float = 1.0, until: int | None = None) -> int:
        read = await step(timeout, until)
        reads.append(read)
        if sum(reads) >= 10:
            backlog_read.set()
        return read

    runner.step = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(backlog_read.wait(), 10)  # the backlog: read at once
    recorder = Recorder(js_store, signer, topology)
    for i in range(3):  # while the runner lingers
        await recorder.record_evidence(
            [(topology.heartbeat_subject("n0"), heartbeat("n0", 100 + i, signer))]
        )
    await asyncio.sleep(0.8)
    stop.set()
    await running
    assert [r for r in reads if r] == [10, 3]  # the three together, in one transaction
