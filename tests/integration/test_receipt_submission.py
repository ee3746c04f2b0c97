"""A real node daemon, enrolled with a control plane over real sockets, sends the receipts
of its completions: on request (the local API and `b3iq-host receipts submit`) or by
itself, once each, and across an outage of the control plane."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import uvicorn

from domain.streams import Topology
from node.api.app import create_app
from node.cli import main
from node.identity import create_identity
from node.keys import KeyStore
from node.managed.client import ControlPlaneClient
from node.managed.daemon import CONTROL_PLANE_URL
from node.services import NodeServices, open_services
from node.settings import NodeSettings
from node.state import Database
from tests.conftest import Servers
from tests.e2e.node.conftest import free_port
from tests.integration.test_managed import Harness, _harness
from tests.route_support import Served, eventually, serve

HELLO = [{"role": "user", "content": "hello"}]


@dataclass
class Daemon:
    cp: Harness
    served: Served
    node: NodeServices
    url: str
    key: str

    @property
    def local(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"})

    async def complete(self) -> str:
        """A completion through the official client; its receipt hash, once the host lists it."""
        client = openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.key)
        done = await client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3)  # type: ignore[arg-type]
        await client.close()
        assert done.model_extra is not None
        receipt_hash: str = done.model_extra["b3iq"]["receipt_hash"]
        async with self.local as local:
            listed = (await local.get("/v1/receipts")).json()["data"]
        assert receipt_hash in [r["receipt_hash"] for r in listed]
        return receipt_hash

    async def recorded(self) -> list[str]:
        """The node's receipts the control plane's operator query shows."""
        await self.cp.project()
        response = await self.cp.client.get(
            f"/v1/nodes/{self.node.identity.node_id}/receipts", headers=self.cp.as_admin()
        )
        assert response.status_code == 200, response.text
        return [r["receipt_hash"] for r in response.json()["data"]]


@contextlib.asynccontextmanager
async def daemon(
    servers: Servers,
    database_url: str,
    topology: Topology,
    tmp_path: Path,
    tiny: Path,
    **node: Any,
) -> AsyncIterator[Daemon]:
    async for cp in _harness(servers, database_url, topology, tmp_path / "cp"):
        served = await serve(cp.plane)
        settings = NodeSettings(
            home=tmp_path / "node", port=free_port(), receipts_flush_s=0.1, **node
        )
        settings.state_dir.mkdir()
        db = Database(settings.db_path)
        identity = create_identity(db, settings.key_path)
        _, key = KeyStore(db).create("owner")
        client = ControlPlaneClient(served.url, identity)
        await client.enroll("0.1.0")
        await client.close()
        db.set_meta(CONTROL_PLANE_URL, served.url)
        db.set_meta("heartbeat_interval_s", "3600")
        db.close()
        services = open_services(settings)
        config = uvicorn.Config(
            create_app(services, [tiny]),
            host="127.0.0.1",
            port=settings.port,
            log_level="critical",
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "the node daemon did not start"
            await asyncio.sleep(0.02)
        d = Daemon(cp, served, services, settings.base_url, key)
        try:
            yield d
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            with contextlib.suppress(Exception):
                await d.served.stop()


async def test_submitted_receipts_arrive_once_even_across_an_outage(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path, tiny: Path
) -> None:
    async with (
        daemon(servers, database_url, topology, tmp_path, tiny, auto_submit_receipts=False) as d,
        d.local as local,
    ):
        first = await d.complete()
        assert await d.recorded() == []  # nothing leaves the host unasked

        queued = await local.post("/v1/receipts/submit", json={"receipt_hashes": [first]})
        assert queued.status_code == 202, queued.text
        assert queued.json()["queued"] == 1
        await eventually(lambda: _has(d, first))
        again = await local.post("/v1/receipts/submit")  # no body: every receipt not sent
        assert again.status_code == 202, again.text
        assert (again.json()["queued"], again.json()["already_submitted"]) == (0, 1)
        unknown = await local.post("/v1/receipts/submit", json={"receipt_hashes": ["0" * 64]})
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "receipt_not_found")

        await d.served.stop()
        second = await d.complete()
        down = await local.post("/v1/receipts/submit", json={})
        assert (down.json()["queued"], down.json()["waiting"]) == (1, 1)
        await asyncio.sleep(0.5)  # the sender tries, fails, backs off
        still = await local.post("/v1/receipts/submit", json={"receipt_hashes": [second]})
        assert (still.json()["already_queued"], still.json()["waiting"]) == (1, 1)
        d.served = await serve(d.cp.plane, int(d.served.url.rpartition(":")[2]))
        await eventually(lambda: _has(d, second))
        assert sorted(await d.recorded()) == sorted([first, second])

        # The command line queues through the same local API, the key from a file.
        third = await d.complete()
        key_file = tmp_path / "key"
        key_file.write_text(d.key)
        key_file.chmod(0o600)
        argv = ["receipts", "submit", "--url", d.url, "--api-key-file", str(key_file)]
        assert await asyncio.to_thread(main, [*argv, "--receipt", third]) == 0
        await eventually(lambda: _has(d, third))
        assert await asyncio.to_thread(main, [*argv, "--receipt", "f" * 64]) == 1


async def test_an_enrolled_node_sends_its_receipts_by_itself(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path, tiny: Path
) -> None:
    async with daemon(servers, database_url, topology, tmp_path, tiny) as d:
        made = [await d.complete() for _ in range(3)]
        await eventually(lambda: _all(d, made))
        assert len(await d.recorded()) == 3


async def _has(d: Daemon, receipt_hash: str) -> bool:
    return receipt_hash in await d.recorded()


async def _all(d: Daemon, hashes: list[str]) -> bool:
    return set(hashes) <= set(await d.recorded())
