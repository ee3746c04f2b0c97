"""The node's enrollment and heartbeat outbox against an in-loop control plane."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from domain.heartbeat_report import HeartbeatReport, InventoryReport
from domain.signing import Signer
from domain.streams import Topology
from node.identity import NodeIdentity
from node.managed.client import ControlPlaneClient
from node.managed.heartbeats import HeartbeatLoop
from node.managed.outbox import Outbox
from node.state import Database
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path / "cp"):
        yield harness


class Switch(httpx.AsyncBaseTransport):
    """The control plane, reachable or not."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.up, self.sent = inner, True, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("down", request=request)
        self.sent += 1
        return await self.inner.handle_async_request(request)


async def test_heartbeats_queue_while_down_and_arrive_once(cp: Harness, tmp_path: Path) -> None:
    db = Database(tmp_path / "node.sqlite3")
    identity = NodeIdentity("node-out", Signer.generate())
    switch = Switch(cp.client._transport)
    client = ControlPlaneClient("http://cp", identity, transport=switch)
    enrolled = await client.enroll("0.1.0")
    assert enrolled.status == "enrolled"

    def report(seq: int) -> HeartbeatReport:
        return HeartbeatReport(
            node_id="node-out",
            heartbeat_seq=seq,
            sent_at=datetime.now(UTC),
            agent_version="0.1.0",
            inventory=InventoryReport(os="Linux"),
        )

    outbox = Outbox(db)
    loop = HeartbeatLoop(report, client, outbox)
    switch.up = False
    for _ in range(3):
        loop.beat()
        assert await loop.flush() is False
    assert len(outbox) == 3
    switch.up = True
    assert await loop.flush() is True
    assert len(outbox) == 0
    _, beats = await cp.heads()
    assert beats == 3

    # A response lost after the control plane accepted it: the resend is refused as
    # already seen and leaves the outbox, so nothing is sent twice.
    loop.beat()
    [item] = outbox.pending()
    assert (await client.post_signed(item.path, item.body)).status_code == 201
    assert await loop.flush() is True
    assert len(outbox) == 0
    assert (await cp.heads())[1] == 4
    await client.close()
    db.close()
