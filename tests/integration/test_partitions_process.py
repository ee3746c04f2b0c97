"""Two real `b3iq projector --partitions 2` processes; the one running a heartbeat
partition is SIGKILLed mid-stream and the other takes its work over."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from adapters.jetstream import JetStreamEventStore
from adapters.services import rebuild, sharing_scope, work_names
from adapters.work_sharing import owners
from domain.signing import Signer
from domain.streams import Topology
from projections.heartbeats import HeartbeatsProjection
from tests.conftest import Servers
from tests.integration.test_partitions import beats, beats_projected, runners, until
from tests.integration.test_projector import settings_for

BEATS = 4000
B3IQ = str(Path(sys.executable).parent / "b3iq")
WORK = work_names(2)


def projector_env(
    servers: Servers, database_url: str, topology: Topology, data_dir: Path
) -> dict[str, str]:
    return {
        **os.environ,
        "B3IQ_NATS_URL": servers.nats_url,
        "B3IQ_DATABASE_URL": database_url,
        "B3IQ_STREAM_PREFIX": topology.prefix,
        "B3IQ_DATA_DIR": str(data_dir),
    }


def start_projector(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [B3IQ, "projector", "--partitions", "2"], env=env, stdout=out, stderr=out
        )


async def test_a_killed_projectors_partitions_are_taken_over_and_equal_a_clean_replay(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    env = {
        **projector_env(servers, database_url, topology, tmp_path),
        "B3IQ_PROJECTION_BATCH": "100",
    }
    started = [start_projector(env, tmp_path / f"projector-{n}.log") for n in range(2)]
    procs = {p.pid: p for p in started}
    scope = sharing_scope("public", topology)

    async def held() -> dict[str, int]:
        async with pool.acquire() as conn:
            found = await owners(conn, scope, WORK)
        return {work: int(owner.rpartition("/")[2]) for work, owner in found.items()}

    async def shared_by(pids: set[int]) -> bool:
        """All the work is held, by these processes, each heartbeat partition by another
        one when there are two (the assignment both work out, once they see each other)."""
        found = await held()
        spread = len({found.get(f"heartbeats[{i}/2]") for i in (1, 2)}) == min(len(pids), 2)
        return len(found) == len(WORK) and set(found.values()) == pids and spread

    try:
        await until(lambda: shared_by(set(procs)), timeout=30)
        writing = asyncio.create_task(beats(js_store, topology, signer, BEATS, chunk=200))
        await until(lambda: _projected_more_than(pool, 400), timeout=30)
        victim = (await held())["heartbeats[1/2]"]
        procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        procs.pop(victim).wait(timeout=10)
        assert not writing.done()  # mid-stream: the log grows on after the kill
        await until(lambda: shared_by(set(procs)), timeout=10)
        taken_over_s = time.monotonic() - killed_at
        await writing
        await until(lambda: _projected_more_than(pool, BEATS - 1), timeout=60)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=20)
    assert taken_over_s < 5
    assert await beats_projected(pool) == BEATS
    report = await rebuild(settings_for(servers, database_url, topology, tmp_path))
    assert report.differences == []


async def _projected_more_than(pool: asyncpg.Pool, count: int) -> bool:
    return await beats_projected(pool) > count


async def test_a_projector_started_with_another_count_refuses_to_start(
    js_store: JetStreamEventStore,
    topology: Topology,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    for runner in runners(pool, js_store, topology, 2, [HeartbeatsProjection()]):
        await runner.step(timeout=0)  # the heartbeat projection is split 2 ways now
        await runner.reset()
    refused = await asyncio.create_subprocess_exec(
        B3IQ,
        "projector",
        "--partitions",
        "3",
        env=projector_env(servers, database_url, topology, tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(refused.communicate(), 60)
    assert refused.returncode == 3
    assert "start every projector with --partitions 2" in " ".join(output.decode().split())
