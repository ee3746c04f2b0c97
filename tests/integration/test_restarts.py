"""NATS or Postgres restarts under a running projector: it waits, re-reads, and applies
each event once."""

import asyncio
from pathlib import Path

import asyncpg

from adapters.jetstream import JetStreamEventStore
from adapters.postgres import create_pool, migrate
from adapters.projector import ProjectionRunner
from adapters.recorder import Recorder
from domain.signing import Signer
from domain.streams import Topology
from ops.devstack.nats_server import NatsServer
from ops.devstack.postgres_server import PostgresServer
from projections.heartbeats import HeartbeatsProjection
from tests.support import heartbeat


async def test_projector_survives_a_nats_restart(
    pool: asyncpg.Pool, topology: Topology, signer: Signer, tmp_path: Path
) -> None:
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    store = await JetStreamEventStore.connect(nats.url, topology)
    recorder = Recorder(store, signer, topology)

    async def beats(start: int, count: int) -> None:
        await recorder.record_evidence(
            [
                (topology.heartbeat_subject("n1"), heartbeat("n1", i, signer))
                for i in range(start, start + count)
            ]
        )

    runner = ProjectionRunner(pool, store, topology, HeartbeatsProjection(), batch_size=100)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await beats(0, 300)
        await runner_reaches(runner, 300)
        nats.restart()
        await asyncio.sleep(1.5)  # the client reconnects by itself
        await beats(300, 200)
        await runner_reaches(runner, 500)
        assert not task.done()
        assert await pool.fetchval("SELECT heartbeat_count FROM node_heartbeats") == 500
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await store.close()
        nats.stop()


async def runner_reaches(runner: ProjectionRunner, seq: int) -> None:
    for _ in range(300):
        if runner.position >= seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"stuck at {runner.position}, wanted {seq}")


async def test_projector_survives_a_postgres_restart(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, tmp_path: Path
) -> None:
    postgres = PostgresServer(tmp_path / "pg", settings={"fsync": "off"})
    postgres.start()
    await migrate(postgres.dsn())
    pool = await create_pool(postgres.dsn())
    recorder = Recorder(js_store, signer, topology)
    beats = [(topology.heartbeat_subject("n1"), heartbeat("n1", i, signer)) for i in range(400)]
    runner = ProjectionRunner(pool, js_store, topology, HeartbeatsProjection(), batch_size=100)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await recorder.record_evidence(beats[:200])
        await runner_reaches(runner, 200)
        postgres.restart()
        await recorder.record_evidence(beats[200:])
        await runner_reaches(runner, 400)
        assert not task.done()
        assert await pool.fetchval("SELECT heartbeat_count FROM node_heartbeats") == 400
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await pool.close()
        postgres.stop()
