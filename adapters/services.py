"""Long-running services and one-shot jobs, each started from settings."""

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import uvicorn
from prometheus_client import start_http_server

from adapters.api_workers import listening_socket
from adapters.bootstrap import ControlPlane, bootstrap
from adapters.checkpoints import Checkpointer
from adapters.heap import keep_heap_trimmed
from adapters.http.app import create_app
from adapters.postgres import create_pool, migrate
from adapters.projector import ProjectionRunner, runner_name, stream_of
from adapters.replay_processes import ReplayAt, replay_in_processes
from adapters.settings import Settings
from adapters.stale_sweeper import StaleSweeper
from adapters.work_sharing import Work, WorkSharing
from domain.partitions import WHOLE, Partition, split
from domain.streams import Topology
from projections.catalog import PARTITIONED, all_projections
from projections.checkpoints import claim_layout, partition_checkpoints
from projections.compare import TableDifference, compare_table
from projections.projection import Projection

log = logging.getLogger("b3iq")


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(settings: Settings, *, shared_port: bool = False) -> None:
    """``shared_port``: bind with SO_REUSEPORT, as one of several workers."""
    keep_heap_trimmed()
    plane = await bootstrap(settings)
    app = create_app(plane, own_plane=True)
    # What is built by now lives as long as the process: out of the collector's way. A
    # full collection walked all of it, ~90 ms, inside one gateway request's latency.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        server_header=False,
        # Nodes' long-polls would hold a shutdown for their whole wait; they poll again.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        # Nodes dial without compression; offering it would cost every route ~45 KiB.
        ws_per_message_deflate=False,
    )
    sockets = [listening_socket(settings.host, settings.port)] if shared_port else None
    await uvicorn.Server(config).serve(sockets=sockets)


def partitions_of(projection: Projection, count: int) -> list[Partition]:
    """How a projection is split when split ``count`` ways: whole unless it may be."""
    return split(count) if projection.name in PARTITIONED else [WHOLE]


def projection_work(
    plane: ControlPlane, count: int, batch_size: int, linger_s: float = 0.0
) -> list[Work]:
    """A piece of work per projection partition, each a fresh runner when claimed (it
    reads on from the partition's committed checkpoint)."""

    def work(projection: Projection, partition: Partition) -> Work:
        def runner() -> ProjectionRunner:
            return ProjectionRunner(
                plane.pool,
                plane.store,
                plane.topology,
                projection,
                batch_size=batch_size,
                partition=partition,
                linger_s=linger_s,
            )

        name = runner_name(projection, partition)
        return Work(name, lambda stop: runner().run(stop), group=projection.name)

    return [work(p, part) for p in all_projections() for part in partitions_of(p, count)]


CHORES = ("checkpointer", "stale_sweeper")
"""Work besides the projections that one projector process does at a time."""


def work_names(count: int) -> list[str]:
    """Every piece of work projector processes share, split ``count`` ways."""
    runners = [runner_name(p, part) for p in all_projections() for part in partitions_of(p, count)]
    return [*runners, *CHORES]


async def claim_layouts(plane: ControlPlane, count: int) -> None:
    """Split the projections ``count`` ways, or check they already are (PartitionsChanged:
    another count is in use; refuse before running anything)."""
    async with plane.pool.acquire() as conn, conn.transaction():
        for projection in all_projections():
            stream = stream_of(plane.topology, projection).name
            await claim_layout(conn, projection.name, stream, len(partitions_of(projection, count)))


async def run_projector(settings: Settings, metrics_port: int | None = None) -> None:
    """One projector process: it shares the partitions of every projection, and the
    chores, with the other projector processes (or runs them all when alone)."""
    keep_heap_trimmed()
    plane = await bootstrap(settings)
    try:
        count = settings.projector_partitions
        await claim_layouts(plane, count)
        if metrics_port:
            start_http_server(metrics_port, addr=settings.host)
        stop = stop_on_signals()
        checkpointer = Checkpointer(
            plane.store,
            plane.recorder,
            plane.topology,
            every_events=settings.checkpoint_every_events,
            every_s=settings.checkpoint_every_s,
        )
        sweeper = StaleSweeper(plane.managed.billing, settings.billing_sweep_every_s)
        chores = dict(zip(CHORES, (checkpointer.run, sweeper.run), strict=True))
        work = [
            *projection_work(plane, count, settings.projection_batch, settings.projection_linger_s),
            *(Work(name, run) for name, run in chores.items()),
        ]
        async with plane.pool.acquire() as conn:
            schema = await conn.fetchval("SELECT current_schema()")
        sharing = WorkSharing(
            settings.database_url, work, scope=sharing_scope(schema, plane.topology)
        )
        log.info("sharing %s", ", ".join(w.name for w in work))
        await sharing.run(stop)
    finally:
        await plane.close()


def sharing_scope(schema: str, topology: Topology) -> str:
    """Whose work projector processes share: one deployment's streams and read models."""
    return f"{schema}/{topology.prefix}"


async def _live_positions(plane: ControlPlane) -> dict[tuple[str, str, Partition], int]:
    async with plane.pool.acquire() as conn:
        return await partition_checkpoints(conn)


def _rebuild_targets(
    projection: Projection,
    stream: str,
    live: dict[tuple[str, str, Partition], int],
    count: int | None,
) -> dict[Partition, int]:
    """Where to replay each partition of ``projection`` to: as far as the live one got,
    split as the live one is (or ``count`` ways: then each goes as far as the furthest)."""
    mine = {
        part: seq for (name, s, part), seq in live.items() if (name, s) == (projection.name, stream)
    }
    if count is None or sorted(mine) == partitions_of(projection, count):
        return dict(sorted(mine.items()))
    furthest = max(mine.values(), default=0)
    return dict.fromkeys(partitions_of(projection, count), furthest)


class RebuildReport(NamedTuple):
    schema: str
    events: int
    seconds: float
    differences: list[TableDifference]
    tables: list[str]
    retired: str | None = None
    """With swap: the schema the old read models now live in."""


async def rebuild(
    settings: Settings,
    *,
    keep: bool = False,
    swap: bool = False,
    partitions: int | None = None,
    jobs: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> RebuildReport:
    """Project the whole log from sequence 1 into a fresh schema and compare it with the
    live read models, table by table. ``swap`` then promotes the rebuilt schema to
    ``public`` (blue/green, for projection code changes): running projectors notice their
    checkpoints moved and read on from the rebuilt positions.

    Each partition is replayed as far as its live counterpart. ``partitions``: split the
    rebuilt read models that many ways instead of as the live ones are (swapped in, they
    stop projectors started with another count: restart them with this one). ``jobs``: the
    projections replay in that many processes at once."""
    schema = "rebuild_" + datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    await migrate(settings.database_url, schema)
    plane = await bootstrap(settings)
    # A connection per projection: StreamReplay applies each batch to all of them at once.
    scratch = await create_pool(
        settings.database_url, schema=schema, max_size=len(all_projections()) + 1
    )
    started, events = time.perf_counter(), 0
    at = ReplayAt(
        settings.nats_url,
        plane.topology,
        settings.stream_replicas,
        settings.database_url,
        schema,
        settings.projection_batch,
    )
    tables = [t for p in all_projections() for t in p.tables]
    try:
        for _attempt in range(3):  # the live side may move on while we compare: try again
            live = await _live_positions(plane)
            targets = await _targets(plane, scratch, live, partitions)
            events += await replay_in_processes(plane.store, at, targets, jobs, progress)
            async with scratch.acquire() as conn:
                found = [await compare_table(conn, "public", schema, t) for t in tables]
            if await _live_positions(plane) == live:
                break
        seconds = time.perf_counter() - started
        retired = None
        async with scratch.acquire() as conn:
            if swap:
                retired = await _swap_in(conn, schema, tables)
            elif not keep:
                await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        differences = [d for d in found if d]
        return RebuildReport(schema, events, seconds, differences, tables, retired)
    finally:
        await scratch.close()
        await plane.close()


async def _targets(
    plane: ControlPlane,
    scratch: asyncpg.Pool,
    live: dict[tuple[str, str, Partition], int],
    partitions: int | None,
) -> list[tuple[ProjectionRunner, int]]:
    """A runner into ``scratch`` for every projection partition, with how far its live
    counterpart got (see ``_rebuild_targets``)."""
    targets = []
    for projection in all_projections():
        stream = stream_of(plane.topology, projection).name
        found = _rebuild_targets(projection, stream, live, partitions)
        if found:  # every partition's checkpoint, those still at 0 too
            async with scratch.acquire() as conn, conn.transaction():
                await claim_layout(conn, projection.name, stream, len(found))
        for partition, target in found.items():
            runner = ProjectionRunner(
                scratch, plane.store, plane.topology, projection, partition=partition
            )
            targets.append((runner, target))
    return targets


_NOT_CARRIED = frozenset({"projection_checkpoints", "alembic_version"})


async def _swap_in(conn: Any, schema: str, projected: list[str]) -> str:
    """Make ``schema`` the live one in one transaction; tables the log doesn't rebuild
    (admin tokens) come along with their rows."""
    retired = schema.replace("rebuild_", "retired_", 1)
    async with conn.transaction():
        live_tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        for row in live_tables:
            table = row["tablename"]
            if table in _NOT_CARRIED or table in projected:
                continue
            await conn.execute(f'LOCK TABLE public."{table}" IN EXCLUSIVE MODE')
            await conn.execute(f'INSERT INTO "{schema}"."{table}" SELECT * FROM public."{table}"')
        await conn.execute(f'ALTER SCHEMA public RENAME TO "{retired}"')
        await conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO public')
    return retired
