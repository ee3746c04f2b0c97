"""A node cut off from the control plane for a simulated hour: the API process is
killed (-9), the node's heartbeat loop keeps beating into its outbox, the API comes back,
dies again mid-delivery, comes back again; every heartbeat lands exactly once."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from adapters.jetstream import JetStreamEventStore
from adapters.jetstream.nonces import bucket_name
from domain.heartbeat_report import HeartbeatReport, InventoryReport
from domain.signing import Signer
from domain.streams import Topology
from node.identity import NodeIdentity
from node.managed.client import ControlPlaneClient
from node.managed.heartbeats import HeartbeatLoop
from node.managed.outbox import Outbox
from node.state import Database
from tests.conftest import Servers
from tests.fault_support import ApiProcess, FaultCounts, count, eventually, heartbeat_seqs

INTERVAL = timedelta(seconds=30)
OFFLINE = timedelta(hours=1)


@pytest.fixture
async def own_streams(servers: Servers, topology: Topology) -> AsyncIterator[None]:
    yield
    nc = await nats.connect(servers.nats_url)
    js = nc.jetstream()
    for name in (*(s.name for s in topology.streams), f"KV_{bucket_name(topology)}"):
        await js.delete_stream(name)
    await nc.close()


async def test_an_hour_offline_is_delivered_once(
    servers: Servers,
    database_url: str,
    topology: Topology,
    own_streams: None,
    tmp_path: Path,
    record_counts: Callable[[FaultCounts], None],
) -> None:
    api = ApiProcess(
        {
            "B3IQ_NATS_URL": servers.nats_url,
            "B3IQ_DATABASE_URL": database_url,
            "B3IQ_STREAM_PREFIX": topology.prefix,
        },
        tmp_path / "cp",
    )
    api.start()
    db = Database(tmp_path / "node.sqlite3")
    identity = NodeIdentity("node-offline", Signer.generate())
    client = ControlPlaneClient(api.url, identity, timeout=5)
    started = datetime.now(UTC) - OFFLINE  # the node's clock, an hour of beats ago
    beats = 0

    def report(seq: int) -> HeartbeatReport:
        return HeartbeatReport(
            node_id=identity.node_id,
            heartbeat_seq=seq,
            sent_at=started + INTERVAL * beats,
            agent_version="0.1.0",
            inventory=InventoryReport(os="Linux"),
        )

    outbox = Outbox(db)
    loop = HeartbeatLoop(report, client, outbox)
    store = await JetStreamEventStore.connect(servers.nats_url, topology)
    try:
        assert (await client.enroll("0.1.0")).status == "enrolled"
        loop.beat()
        assert await loop.flush() is True

        api.kill()
        failed_flushes = 0
        for _ in range(int(OFFLINE / INTERVAL)):  # an hour of beats, each tried at once
            beats += 1
            loop.beat()
            if beats % 10 == 0:
                failed_flushes += await loop.flush() is False
        assert failed_flushes == beats // 10
        backlog = len(outbox)
        assert backlog == beats

        api.start()
        delivering = asyncio.create_task(loop.flush())
        await eventually(lambda: len(outbox) < backlog // 2, 30, "half the backlog")
        api.kill()  # down again in the middle of delivering it
        assert await delivering is False
        left = len(outbox)
        assert 0 < left < backlog

        api.start()
        assert await loop.flush() is True
        assert len(outbox) == 0

        generated = beats + 1
        found = await heartbeat_seqs(store, topology.heartbeats.name)
        result = count(
            "node offline 1 h (API kill -9 twice)",
            range(1, generated + 1),
            found[identity.node_id],
            note=f"{backlog} beats queued ({OFFLINE} at {INTERVAL.seconds} s), "
            f"{failed_flushes} failed flushes while offline, {left} left when the API died "
            "again mid-delivery",
        )
        record_counts(result)
        assert result.lost == 0
        assert result.duplicated == 0
        assert found[identity.node_id] == list(range(1, generated + 1))
    finally:
        await client.close()
        await store.close()
        db.close()
        api.stop()
