"""Projector processes sharing the work: each projection partition (and each chore, such
as signing checkpoints) is run by one process at a time.

A process owns a piece of work while it holds a PostgreSQL advisory lock on a session of
its own. A process that dies loses its session and so its locks at once (the kernel
closes its socket; keepalives catch a host that vanished), and the others take its work
over on their next look. There are no leases to renew and no clocks to compare.

Ownership only spreads the work and avoids doing it twice; exactly-once never rests on
it. Two runners on one partition (a lock session dropped while its runner still
commits, say) are safe: each batch commits under the partition's checkpoint row lock.

Each process holds a member lock too, so all of them see the same members, and each
works out the same assignment from them (``domain.partitions.assign``: a projection's
partitions on different processes, even counts). A process lets go of work assigned to
another and claims the work assigned to it once nobody holds it; when a member dies, its
work is assigned to the others.
"""

import asyncio
import contextlib
import logging
import os
import socket
import zlib
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, NamedTuple

import asyncpg
from prometheus_client import Gauge

from adapters.outages import TRANSIENT, wait_or_stop
from domain.partitions import assign

log = logging.getLogger("b3iq.work")
OWNED = Gauge("b3iq_projector_owned_work", "Pieces of work this process runs now")
LOST = (*TRANSIENT, OSError, asyncpg.PostgresError)


class Work(NamedTuple):
    name: str
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    """Does the work until the event is set; called afresh each time it is claimed."""
    group: str = ""
    """Work best spread over different processes (one projection's partitions); by
    default a group of its own."""


class WorkFailed(Exception):
    """A piece of work stopped on an error of its own (not an outage it could wait out)."""


class _Running(NamedTuple):
    stop: asyncio.Event
    task: asyncio.Task[None]


def _key(text: str) -> int:
    # A stable int4 (non-negative, so it reads back the same from pg_locks' oid columns).
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


class WorkSharing:
    """Claims this process's share of ``work`` and runs it until stopped."""

    RELEASE_GRACE_S = 10.0

    def __init__(
        self,
        dsn: str,
        work: Sequence[Work],
        *,
        scope: str,
        look_every_s: float = 0.5,
    ) -> None:
        """``scope``: what the work belongs to (a stream prefix and schema), so that
        deployments sharing one database never take each other's locks."""
        self._dsn = dsn
        self._work = {w.name: w for w in work}
        self._groups = {w.name: w.group or w.name for w in work}
        self._ids = {w.name: _work_key(scope, w.name) for w in work}
        if len(set(self._ids.values())) != len(self._ids):
            raise ValueError(f"two pieces of work in {scope!r} hash to one lock")
        self._members_ns, self._work_ns = _namespaces(scope)
        self._look_every_s = look_every_s
        self.running: dict[str, _Running] = {}
        self._me = 0
        """The backend pid of our lock session: who we are among the members."""

    async def run(self, stop: asyncio.Event) -> None:
        """Share the work until ``stop``; survives PostgreSQL going away and coming back.
        A piece of work that fails (not an outage: it retries those itself) ends it."""
        backoff = 0.2
        try:
            while not stop.is_set():
                try:
                    conn = await self._connect()
                except LOST as exc:
                    log.warning("cannot reach PostgreSQL to share work: %s", exc)
                    await wait_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                try:
                    await self._keep_up(conn, stop)
                except LOST as exc:
                    # The locks went with the session; the work runs on (it waits out the
                    # outage itself) and is claimed again, or let go, once we are back.
                    log.warning("lost the work-sharing session: %s", exc)
                finally:
                    with contextlib.suppress(*LOST):
                        await conn.close(timeout=2)
        finally:
            await asyncio.gather(*(self._stop(name) for name in list(self.running)))

    async def _connect(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            timeout=5,
            server_settings={
                # Who holds what, for operators (and `owners`): host and process id.
                "application_name": f"b3iq-projector {socket.gethostname()}/{os.getpid()}",
                # So that PostgreSQL drops the session, and its locks, of a host that
                # vanished within seconds rather than hours (TCP connections only).
                "tcp_keepalives_idle": "5",
                "tcp_keepalives_interval": "2",
                "tcp_keepalives_count": "3",
                "tcp_user_timeout": "10000",
            },
        )
        self._me = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("SELECT pg_advisory_lock($1, $2)", self._members_ns, self._me)
        # After a lost session: keep only the work nobody else claimed meanwhile.
        for name in list(self.running):
            if not await self._try_lock(conn, name):
                log.info("%s: taken over by another process", name)
                await self._stop(name)
        return conn

    async def _keep_up(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name in self._ended():
                await self._unlock(conn, name)
                log.warning("%s ended on its own; it may be claimed again", name)
            members, held = await self._look(conn)
            assigned = assign(self._groups, members)
            for name in list(self.running):
                if assigned.get(name) != self._me:
                    await self._stop(name)
                    await self._unlock(conn, name)
                    log.info("released %s (%d processes share the work)", name, len(members))
            for name, member in assigned.items():
                free = name not in self.running and self._ids[name] not in held
                if member == self._me and free and await self._try_lock(conn, name):
                    self._start(name)
                    log.info("claimed %s", name)
            OWNED.set(len(self.running))
            await wait_or_stop(stop, self._look_every_s)

    async def _look(self, conn: asyncpg.Connection) -> tuple[list[int], set[int]]:
        """The processes sharing the work (their lock sessions' pids), and which work any
        of them holds."""
        rows = await conn.fetch(
            "SELECT classid::bigint AS ns, objid::bigint AS id FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid IN ($1::bigint::oid, $2::bigint::oid)",
            self._members_ns,
            self._work_ns,
        )
        members = [r["id"] for r in rows if r["ns"] == self._members_ns]
        return members, {r["id"] for r in rows if r["ns"] == self._work_ns}

    async def _try_lock(self, conn: asyncpg.Connection, name: str) -> bool:
        got: bool = await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", self._work_ns, self._ids[name]
        )
        return got

    async def _unlock(self, conn: asyncpg.Connection, name: str) -> None:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", self._work_ns, self._ids[name])

    def _start(self, name: str) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self._work[name].run(stop), name=name)
        self.running[name] = _Running(stop, task)

    async def _stop(self, name: str) -> None:
        running = self.running.pop(name)
        running.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), self.RELEASE_GRACE_S)
        except TimeoutError:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
        except Exception as exc:  # it failed while stopping: say so, the work moves on
            log.error("%s failed while stopping: %r", name, exc)

    def _ended(self) -> list[str]:
        """Work whose task returned by itself; raises WorkFailed for one that failed (it
        ends the process, as a lone runner's error always did)."""
        ended = []
        for name, running in list(self.running.items()):
            if running.task.done():
                del self.running[name]
                if (error := running.task.exception()) is not None:
                    raise WorkFailed(f"{name}: {error!r}") from error
                ended.append(name)
        return ended


def _work_key(scope: str, name: str) -> int:
    return _key(f"{scope}/work/{name}")


def _namespaces(scope: str) -> tuple[int, int]:
    """The first lock keys of ``scope``'s members and of its work."""
    return _key(f"{scope}/members"), _key(f"{scope}/work")


async def owners(conn: asyncpg.Connection, scope: str, names: Iterable[str]) -> dict[str, str]:
    """Which process (its session's application_name: host/pid) runs each piece of work."""
    _, work_ns = _namespaces(scope)
    ids = {_work_key(scope, name): name for name in names}
    rows = await conn.fetch(
        "SELECT l.objid::bigint AS id, a.application_name AS owner"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = $1::bigint::oid",
        work_ns,
    )
    return {ids[r["id"]]: r["owner"] for r in rows if r["id"] in ids}
