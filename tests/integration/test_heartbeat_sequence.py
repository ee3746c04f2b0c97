"""A node's heartbeat sequence holds across API processes and concurrent requests."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.bootstrap import bootstrap
from adapters.http.app import create_app
from domain.streams import Topology
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness
from tests.managed_support import SimulatedNode


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


async def test_a_process_that_missed_newer_heartbeats_still_refuses_an_old_one(
    cp: Harness,
) -> None:
    # A second API process on the same log and database, with its own caches.
    other = await bootstrap(cp.plane.settings, clock=cp.clock)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(create_app(other)), base_url="http://cp2"
        ) as client:
            here = cp.node("node-s")
            assert (await here.enroll()).status_code == 201
            there = SimulatedNode("node-s", client, cp.clock)
            there.signer = here.signer
            assert (await there.heartbeat(here.report(seq=1))).status_code == 201
            assert (await here.heartbeat(here.report(seq=2))).status_code == 201
            before = await cp.heads()

            # The other process last saw seq 1; seq 2 again (a fresh request) must fail.
            resent = await there.heartbeat(here.report(seq=2))
            assert resent.status_code == 409, resent.text
            assert resent.json()["error"] == {
                "status": 409,
                "title": "Conflict",
                "detail": "heartbeat_seq 2 is not after 2",
                "code": "stale_sequence",
            }
            assert await cp.heads() == before
            assert (await there.heartbeat(here.report(seq=3))).status_code == 201
    finally:
        await other.close()


async def test_the_same_sequence_sent_twice_at_once_lands_once(cp: Harness) -> None:
    node = cp.node("node-t")
    assert (await node.enroll()).status_code == 201
    assert (await node.heartbeat()).status_code == 201
    _, beats = await cp.heads()
    body = node.report()
    first, second = await asyncio.gather(node.heartbeat(body), node.heartbeat(body))
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    assert (await cp.heads())[1] == beats + 1
