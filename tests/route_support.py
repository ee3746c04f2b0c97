"""Two control-plane API processes over real sockets and a real node daemon, for route,
benchmark and gateway tests.

Both control planes serve (uvicorn) against the same NATS and Postgres; the node runs its
Managed Mode loops (heartbeats, commands, route) from its own state, and serves no port at
all: everything reaches it over the connection it dials out.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.bootstrap import ControlPlane, bootstrap
from adapters.http.app import create_app
from domain.streams import Topology
from node.identity import create_identity
from node.managed.client import ControlPlaneClient
from node.managed.daemon import CONTROL_PLANE_URL, managed_mode
from node.services import PROFILE_POLICY, NodeServices, open_services
from node.settings import NodeSettings
from node.state import Database
from node.tiny_model import write_tiny_model
from tests.conftest import Servers
from tests.e2e.node.conftest import free_port
from tests.integration.test_managed import Harness, _harness

FRESH_S = 3600.0


@dataclass
class Served:
    plane: ControlPlane
    url: str
    server: uvicorn.Server
    task: "asyncio.Task[None]"

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)


async def serve(plane: ControlPlane, port: int | None = None) -> Served:
    port = port or free_port()
    config = uvicorn.Config(
        create_app(plane),
        host="127.0.0.1",
        port=port,
        log_level="critical",  # a stop cancels the node's command long-poll mid-wait
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    return Served(plane, f"http://127.0.0.1:{port}", server, task)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


@dataclass
class World:
    cp: Harness
    one: Served
    two: Served
    node: NodeServices

    @property
    def node_id(self) -> str:
        return self.node.identity.node_id

    def admin(self) -> dict[str, str]:
        return self.cp.as_admin()

    async def held(self) -> bool:
        return self.node_id in self.one.plane.managed.broker.connections

    async def route(self, via: Served | None = None) -> dict[str, Any]:
        await self.cp.project()
        async with httpx.AsyncClient(base_url=(via or self.one).url) as http:
            response = await http.get(f"/v1/nodes/{self.node_id}/route", headers=self.admin())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def allow_public(self) -> None:
        async with httpx.AsyncClient(base_url=self.two.url) as http:
            response = await http.put(
                f"/v1/nodes/{self.node_id}/route/policy",
                json={"public_inference_allowed": True, "reason": "test"},
                headers=self.admin(),
            )
        assert response.status_code == 200, response.text

    async def gates(self, model: str = "tiny") -> dict[str, dict[str, Any]]:
        await self.cp.project()
        readiness = await self.cp.readiness(self.node_id, model)
        gates: list[dict[str, Any]] = readiness["models"][0]["gates"]  # type: ignore[index]
        return {g["gate"]: g for g in gates}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@contextlib.asynccontextmanager
async def open_world(
    servers: Servers,
    database_url: str,
    topology: Topology,
    tmp_path: Path,
    tiny: Path,
    **overrides: object,
) -> AsyncIterator[World]:
    """``overrides``: control-plane settings beyond the ones every route test uses."""
    settings = {"benchmark_fresh_s": FRESH_S, "route_probe_interval_s": 3600.0, **overrides}
    async for cp in _harness(servers, database_url, topology, tmp_path / "cp", **settings):
        # A second API process: its own connections and broker, the same log and key.
        second = await bootstrap(cp.plane.settings)
        one, two = await serve(cp.plane), await serve(second)
        node_settings = NodeSettings(home=tmp_path / "node")
        node_settings.state_dir.mkdir()
        db = Database(node_settings.db_path)
        create_identity(db, node_settings.key_path)
        db.close()
        node = open_services(node_settings)
        await node.start([tiny])
        # The owner offers this model to the network (set_profile_policy does the same).
        policy = {
            "network_eligible": True,
            "paid_route_eligible": True,
            "route_tier": "network_beta",
        }
        node.db.set_meta(PROFILE_POLICY + "tiny", json.dumps(policy))
        client = ControlPlaneClient(one.url, node.identity)
        await client.enroll("0.1.0")
        await client.close()
        node.db.set_meta(CONTROL_PLANE_URL, one.url)
        node.db.set_meta("heartbeat_interval_s", "3600")
        w = World(cp, one, two, node)
        try:
            async with managed_mode(node):
                await eventually(w.held)
                yield w
        finally:
            for served in (one, two):
                with contextlib.suppress(Exception):
                    await served.stop()
            await second.close()
            await node.close()


@pytest.fixture
async def world(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path, tiny: Path
) -> AsyncIterator[World]:
    async with open_world(servers, database_url, topology, tmp_path, tiny) as w:
        yield w


@pytest.fixture
async def paid(world: World) -> World:
    return await make_paid(world)


async def make_paid(world: World) -> World:
    """Protocol evidence, public inference allowed and an observed benchmark: the node
    passes every gate for the tiny model."""
    async with httpx.AsyncClient(base_url=world.one.url, timeout=60) as http:
        observed = await http.post(
            f"/v1/admin/nodes/{world.node_id}/protocol",
            json={"registered": True, "active": True, "stake_wei": "1000", "source": "test"},
            headers=world.admin(),
        )
        assert observed.status_code == 201, observed.text
        await world.allow_public()
        bench = await http.post(
            f"/v1/nodes/{world.node_id}/benchmarks", json={"model": "tiny"}, headers=world.admin()
        )
        assert bench.status_code == 201, bench.text
    await world.cp.project()
    readiness = await world.cp.readiness(world.node_id, "tiny")
    assert readiness["models"][0]["blockers"] == []  # type: ignore[index]
    return world
