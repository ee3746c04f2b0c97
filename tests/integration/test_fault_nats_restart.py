"""NATS killed (-9) and restarted under a node's heartbeats, every part a real process:
the API answers 503 + Retry-After meanwhile, the node's outbox retries, and afterwards
every accepted heartbeat is on the stream exactly once."""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from adapters.jetstream import JetStreamEventStore
from domain.streams import Topology
from ops.devstack.nats_server import NatsServer
from tests.conftest import Servers
from tests.fault_support import (
    ApiProcess,
    FaultCounts,
    NodeDaemon,
    count,
    eventually,
    heartbeat_seqs,
)
from tests.managed_support import MutableClock, SimulatedNode

OUTAGE_S = 2.0


async def test_nats_restart_under_heartbeats_loses_and_duplicates_nothing(
    servers: Servers,
    database_url: str,
    tmp_path: Path,
    record_counts: Callable[[FaultCounts], None],
) -> None:
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    api = ApiProcess(
        {
            "B3IQ_NATS_URL": nats.url,
            "B3IQ_DATABASE_URL": database_url,
            # Ten heartbeats a second: an outage of seconds is a long queue.
            "B3IQ_HEARTBEAT_INTERVAL_S": "0.1",
        },
        tmp_path / "cp",
    )
    node = NodeDaemon(tmp_path / "node")
    store = None
    try:
        api.start()
        node_id = node.enroll(api.url)
        node.start()
        store = await JetStreamEventStore.connect(nats.url, Topology())
        async with httpx.AsyncClient(base_url=api.url, timeout=15) as http:
            clock = MutableClock(datetime.now(UTC))
            probe = SimulatedNode("probe-node", http, clock)
            assert (await probe.enroll()).status_code == 201
            await eventually(lambda: node.generated() >= 5 and not node.queued(), 20, "beats")

            nats.kill()
            down_at = time.monotonic()
            clock.now = datetime.now(UTC)
            started = time.perf_counter()
            refused = await probe.heartbeat()
            answered_in = time.perf_counter() - started
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "service_unavailable"
            assert int(refused.headers["retry-after"]) > 0
            assert answered_in < 2.5  # refused at once, not after the 5 s publish timeout
            ready = await http.get("/ready")
            assert ready.status_code == 503
            assert "retry-after" in ready.headers
            await eventually(lambda: time.monotonic() - down_at > OUTAGE_S, 5, "the outage")
            backlog = len(node.queued())
            assert backlog >= 5  # the node kept beating into its outbox

            nats.start()  # same port, same store dir
            resumed_from = node.generated()
            await eventually(
                lambda: node.generated() > resumed_from + 5 and len(node.queued()) <= 1,
                30,
                f"the outbox to drain; node log:\n{node.tail()}",
            )
            clock.now = datetime.now(UTC)
            assert (await probe.heartbeat()).status_code == 201
            api_accepted = api.heartbeats_accepted()
        node.stop()

        generated, queued = node.generated(), set(node.queued())
        delivered = set(range(1, generated + 1)) - queued
        found = await heartbeat_seqs(store, Topology().heartbeats.name)
        retried = node.log.read_text().count("heartbeat refused: 503 service_unavailable")
        # Delivered without a 201: it had landed, the answer was lost, and the resend was
        # refused as stale_sequence (the probe node had one 201 of its own).
        settled = len(delivered) - (api_accepted - 1)
        result = count(
            "NATS kill -9 + restart, node daemon beating",
            delivered,
            found[node_id],
            note=f"{backlog} queued in a {OUTAGE_S:.0f} s outage; {retried} sends answered "
            f"503 and retried; {settled} landed with the answer lost (resend refused as stale)",
        )
        record_counts(result)
        assert result.lost == 0
        assert result.duplicated == 0
        assert set(found[node_id]) <= set(range(1, generated + 1))
        assert found[node_id] == sorted(found[node_id])  # in the node's order
        assert retried > 0
        assert settled >= 0
    finally:
        node.stop()
        api.stop()
        if store is not None:
            await store.close()
        nats.stop()
