"""The real projector process, SIGKILLed while it works, then restarted."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from adapters.jetstream import JetStreamEventStore
from adapters.recorder import Recorder
from adapters.services import rebuild
from domain.signing import Signer
from domain.streams import Topology
from tests.conftest import Servers
from tests.integration.test_projector import settings_for
from tests.support import heartbeat

B3IQ = str(Path(sys.executable).parent / "b3iq")
BEATS = 40_000


async def applied(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        "SELECT coalesce(sum(last_seq), 0) FROM projection_checkpoints"
        " WHERE projection = 'heartbeats'"
    )


def start_projector(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [B3IQ, "projector"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def test_kill_9_mid_replay_then_restart_equals_a_clean_rebuild(
    js_store: JetStreamEventStore,
    topology: Topology,
    signer: Signer,
    pool: asyncpg.Pool,
    servers: Servers,
    database_url: str,
    tmp_path: Path,
) -> None:
    recorder = Recorder(js_store, signer, topology)
    await recorder.record_evidence(
        [
            (topology.heartbeat_subject(f"n{i % 50}"), heartbeat(f"n{i % 50}", i, signer))
            for i in range(BEATS)
        ]
    )
    env = {
        **os.environ,
        "B3IQ_NATS_URL": servers.nats_url,
        "B3IQ_DATABASE_URL": database_url,
        "B3IQ_STREAM_PREFIX": topology.prefix,
        "B3IQ_DATA_DIR": str(tmp_path),
        "B3IQ_PROJECTION_BATCH": "500",
    }
    projector = start_projector(env)
    try:
        for _ in range(600):  # kill it once it has committed some batches, not all
            if 0 < await applied(pool) < BEATS:
                break
            await asyncio.sleep(0.01)
        projector.send_signal(signal.SIGKILL)
        projector.wait(timeout=10)
        assert 0 < await applied(pool) < BEATS
        projector = start_projector(env)
        for _ in range(600):
            if await applied(pool) == BEATS:
                break
            await asyncio.sleep(0.05)
        assert await applied(pool) == BEATS
    finally:
        projector.terminate()
        projector.wait(timeout=10)
    total = await pool.fetchval("SELECT sum(heartbeat_count) FROM node_heartbeats")
    assert total == BEATS
    settings = settings_for(servers, database_url, topology, tmp_path)
    assert (await rebuild(settings)).differences == []
