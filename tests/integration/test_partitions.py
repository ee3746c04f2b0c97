"""Projections split by subject into partitions, shared by several projector processes:
each event applied once, whoever dies, and read models equal to a clean replay."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import pytest

from adapters.jetstream import JetStreamEventStore
from adapters.postgres import create_pool, migrate
from adapters.projector import ProjectionRunner, runner_name
from adapters.recorder import Recorder
from adapters.services import partitions_of, rebuild, sharing_scope
from adapters.settings import Settings
from adapters.work_sharing import Work, WorkSharing
from domain.partitions import WHOLE, Partition
from domain.signing import Signer
from domain.streams import Topology
from ops.devstack.postgres_server import PostgresServer
from projections.catalog import all_projections
from projections.checkpoints import PartitionsChanged, partition_checkpoints
from projections.heartbeats import HeartbeatsProjection
from projections.projection import Projection
from tests.conftest import Servers
from tests.integration.test_projector import fill, settings_for
from tests.support import heartbeat

NODES = 40


async def beats(
    store: JetStreamEventStore, topology: Topology, signer: Signer, n: int, chunk: int = 5000
) -> None:
    recorder = Recorder(store, signer, topology)
    for start in range(0, n, chunk):
        await recorder.record_evidence(
            [
                (topology.heartbeat_subject(f"n{i % NODES}"), heartbeat(f"n{i % NODES}", i, signer))
                for i in range(start, min(n, start + chunk))
            ]
        )


def runners(
    pool: asyncpg.Pool,
    store: JetStreamEventStore,
    topology: Topology,
    count: int,
    projections: Sequence[Projection] | None = None,
) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(pool, store, topology, p, batch_size=300, partition=part)
        for p in projections or all_projections()
        for part in partitions_of(p, count)
    ]


async def catch_up(store: JetStreamEventStore, group: Sequence[ProjectionRunner]) -> None:
    for runner in group:
        _, head = await store.bounds(runner.stream)
        await runner.catch_up(head)


async def beats_projected(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(sum(heartbeat_count), 0) FROM node_heartbeats"))


async def test_partitions_apply_their_own_subjects_and_equal_a_clean_replay(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    await fill(js_store, topology, signer, beats=3000)
    group = runners(pool, js_store, topology, 3)
    await asyncio.gather(*(catch_up(js_store, [r]) for r in group))
    for runner in group:
        await runner.reset()
    async with pool.acquire() as conn:
        positions = await partition_checkpoints(conn)
    _, head = await js_store.bounds(topology.heartbeats.name)
    split = {k: v for k, v in positions.items() if k[0] == "heartbeats"}
    assert split == {
        ("heartbeats", topology.heartbeats.name, Partition(i, 3)): head for i in range(3)
    }
    assert ("billing", topology.ledger.name, WHOLE) in positions  # whole: cross-aggregate
    assert await beats_projected(pool) == 3000
    report = await rebuild(settings_for(servers, database_url, topology, tmp_path))
    assert report.differences == []


async def test_another_partition_count_is_refused(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, pool: asyncpg.Pool
) -> None:
    await beats(js_store, topology, signer, 100)
    [whole] = runners(pool, js_store, topology, 1, [HeartbeatsProjection()])
    await catch_up(js_store, [whole])
    split = runners(pool, js_store, topology, 2, [HeartbeatsProjection()])
    with pytest.raises(PartitionsChanged, match="split into 1 partition"):
        await split[0].step()
    assert await beats_projected(pool) == 100
    await whole.reset()


async def test_a_swap_to_another_count_stops_the_old_runners_and_the_new_ones_go_on(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    await fill(js_store, topology, signer, beats=600)
    old = runners(pool, js_store, topology, 1)
    await catch_up(js_store, old)
    settings = settings_for(servers, database_url, topology, tmp_path)
    report = await rebuild(settings, swap=True, partitions=2)
    assert report.differences == []
    await beats(js_store, topology, signer, 300)
    heartbeats = next(r for r in old if r.projection.name == "heartbeats")
    with pytest.raises(PartitionsChanged, match="not 1"):
        await catch_up(js_store, [heartbeats])
    new = runners(pool, js_store, topology, 2)
    await catch_up(js_store, new)
    assert await beats_projected(pool) == 900
    assert (await rebuild(settings)).differences == []
    for runner in (*old, *new):
        await runner.reset()


async def test_partitions_still_at_zero_go_on_after_a_swap(
    js_store: JetStreamEventStore,
    topology: Topology,
    pool: asyncpg.Pool,
    signer: Signer,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    group = runners(pool, js_store, topology, 2, [HeartbeatsProjection()])
    for runner in group:
        await runner.step(timeout=0)  # opened on an empty stream: its checkpoint is at 0
    settings = settings_for(servers, database_url, topology, tmp_path)
    assert (await rebuild(settings, swap=True)).differences == []
    await beats(js_store, topology, signer, 200)
    await catch_up(js_store, group)
    assert await beats_projected(pool) == 200
    for runner in group:
        await runner.reset()


@contextlib.asynccontextmanager
async def sharing(
    dsn: str, scope: str, work: Sequence[Work], look_every_s: float = 0.1
) -> AsyncIterator[WorkSharing]:
    shared = WorkSharing(dsn, work, scope=scope, look_every_s=look_every_s)
    stop = asyncio.Event()
    task = asyncio.create_task(shared.run(stop))
    try:
        yield shared
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    """Wait for ``check`` to hold; PostgreSQL being away counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            found = check()
            if found if isinstance(found, bool) else await found:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s")
        await asyncio.sleep(0.05)


async def test_processes_share_the_work_fairly_and_the_last_one_takes_it_all(
    database_url: str,
) -> None:
    running: dict[str, int] = {}

    def piece(name: str) -> Work:
        async def run(stop: asyncio.Event) -> None:
            running[name] = running.get(name, 0) + 1
            try:
                await stop.wait()
            finally:
                running[name] -= 1

        return Work(name, run)

    work = [piece(f"w{i}") for i in range(5)]
    async with sharing(database_url, "test/share", work) as first:
        await until(lambda: len(first.running) == 5)
        async with sharing(database_url, "test/share", work) as second:
            await until(lambda: sorted([len(first.running), len(second.running)]) == [2, 3])
            assert set(first.running).isdisjoint(second.running)
            assert all(n == 1 for n in running.values())
        await until(lambda: len(first.running) == 5)
    assert all(n == 0 for n in running.values())


def runner_work(
    pool: asyncpg.Pool, store: JetStreamEventStore, topology: Topology, count: int
) -> list[Work]:
    def work(projection: Projection, partition: Partition) -> Work:
        async def run(stop: asyncio.Event) -> None:
            runner = ProjectionRunner(
                pool, store, topology, projection, batch_size=200, partition=partition
            )
            await runner.run(stop)

        return Work(runner_name(projection, partition), run, group=projection.name)

    return [work(p, part) for p in all_projections() for part in partitions_of(p, count)]


async def test_postgres_restarted_mid_batch_under_two_sharing_projectors(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    servers: Servers,
    tmp_path: Path,
) -> None:
    postgres = PostgresServer(tmp_path / "pg", settings={"fsync": "off"})
    postgres.start()
    dsn = postgres.dsn()
    await migrate(dsn)
    pools = [await create_pool(dsn, max_size=4) for _ in range(2)]
    scope = sharing_scope("public", topology)
    try:
        async with (
            sharing(dsn, scope, runner_work(pools[0], js_store, topology, 2)) as one,
            sharing(dsn, scope, runner_work(pools[1], js_store, topology, 2)) as two,
        ):
            await until(lambda: bool(one.running) and bool(two.running))
            await fill(js_store, topology, signer, beats=3000)
            await until(lambda: _projected(pools[0], more_than=0))
            postgres.kill()  # a crash: whatever transaction was open is lost
            await beats(js_store, topology, signer, 1000)
            postgres.start()
            await until(lambda: _projected(pools[0], exactly=4000), timeout=30)
        settings = Settings(
            nats_url=servers.nats_url,
            database_url=dsn,
            stream_prefix=topology.prefix,
            data_dir=tmp_path,
        )
        assert (await rebuild(settings)).differences == []
    finally:
        for pool in pools:
            await pool.close()
        postgres.stop()


async def _projected(pool: asyncpg.Pool, *, more_than: int = -1, exactly: int = -1) -> bool:
    found = await beats_projected(pool)
    return found > more_than if exactly < 0 else found == exactly
