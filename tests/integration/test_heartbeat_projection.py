"""The heartbeat projection keeps each node's model profiles as its last report has them."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from domain.streams import Topology
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness
from tests.managed_support import profile


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


async def test_profiles_follow_the_latest_report(cp: Harness) -> None:
    node = cp.node("node-p")
    other = cp.node("node-q")
    for n in (node, other):
        assert (await n.enroll()).status_code == 201
    assert (await other.heartbeat(other.report(profiles=[profile("big")]))).status_code == 201

    async def profiles() -> list[tuple[str, str]]:
        await cp.project()
        detail = await cp.client.get("/v1/nodes/node-p", headers=cp.as_admin())
        return [(p["model"], p["status"]) for p in detail.json()["profiles"]]

    first = [profile("tiny"), profile("big"), profile("tiny", status="runtime_missing")]
    assert (await node.heartbeat(node.report(profiles=first))).status_code == 201
    assert await profiles() == [("big", "installed"), ("tiny", "installed")]

    changed = [profile("tiny", status="runtime_missing")]
    assert (await node.heartbeat(node.report(profiles=changed))).status_code == 201
    assert await profiles() == [("tiny", "runtime_missing")]

    assert (await node.heartbeat(node.report(profiles=[]))).status_code == 201
    assert await profiles() == []
    kept = await cp.client.get("/v1/nodes/node-q", headers=cp.as_admin())
    assert [p["model"] for p in kept.json()["profiles"]] == ["big"]
