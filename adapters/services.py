"""Long-running services and one-shot jobs, each started from settings."""

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import uvicorn
from prometheus_client import start_http_server

from adapters.api_workers import listening_socket
from adapters.bootstrap import ControlPlane, bootstrap
from adapters.checkpoints import Checkpointer
from adapters.http.app import create_app
from adapters.postgres import create_pool, migrate
from adapters.projector import ProjectionRunner
from adapters.settings import Settings
from adapters.stale_sweeper import StaleSweeper
from projections.catalog import all_projections
from projections.checkpoints import checkpoints
from projections.compare import TableDifference, compare_table

log = logging.getLogger("b3iq")


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(settings: Settings, *, shared_port: bool = False) -> None:
    """``shared_port``: bind with SO_REUSEPORT, as one of several workers."""
    plane = await bootstrap(settings)
    app = create_app(plane, own_plane=True)
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


def runners_for(plane: ControlPlane, batch_size: int) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(plane.pool, plane.store, plane.topology, p, batch_size=batch_size)
        for p in all_projections()
    ]


async def run_projector(settings: Settings, metrics_port: int | None = None) -> None:
    plane = await bootstrap(settings)
    if metrics_port:
        start_http_server(metrics_port, addr=settings.host)
    stop = stop_on_signals()
    runners = runners_for(plane, settings.projection_batch)
    checkpointer = Checkpointer(
        plane.store,
        plane.recorder,
        plane.topology,
        every_events=settings.checkpoint_every_events,
        every_s=settings.checkpoint_every_s,
    )
    sweeper = StaleSweeper(plane.managed.billing, settings.billing_sweep_every_s)
    log.info("projecting %s", ", ".join(r.projection.name for r in runners))
    try:
        await asyncio.gather(
            *(r.run(stop) for r in runners), checkpointer.run(stop), sweeper.run(stop)
        )
    finally:
        await plane.close()


async def _live_positions(plane: ControlPlane) -> dict[tuple[str, str], int]:
    async with plane.pool.acquire() as conn:
        return await checkpoints(conn)


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
    progress: Callable[[str, int, int], None] | None = None,
) -> RebuildReport:
    """Project the whole log from sequence 1 into a fresh schema and compare it with the
    live read models, table by table. ``swap`` then promotes the rebuilt schema to
    ``public`` (blue/green, for projection code changes): running projectors notice their
    checkpoints moved and read on from the rebuilt positions."""
    schema = "rebuild_" + datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    await migrate(settings.database_url, schema)
    plane = await bootstrap(settings)
    scratch = await create_pool(settings.database_url, schema=schema, max_size=2)
    started, events = time.perf_counter(), 0
    tables = [t for p in all_projections() for t in p.tables]
    try:
        for _attempt in range(3):  # the live side may move on while we compare: try again
            live = await _live_positions(plane)
            for projection in all_projections():
                runner = ProjectionRunner(
                    scratch,
                    plane.store,
                    plane.topology,
                    projection,
                    batch_size=settings.projection_batch,
                )
                target = live.get((projection.name, runner.stream), 0)
                while runner.position < target:
                    events += await runner.step(timeout=1.0, until=target)
                    if progress:
                        progress(projection.name, runner.position, target)
                await runner.reset()
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
