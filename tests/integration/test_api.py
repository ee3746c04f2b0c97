"""The control-plane API against real servers, and how it behaves when they go away."""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar, get

from adapters.bootstrap import ControlPlane, bootstrap
from adapters.checkpoints import Checkpointer
from adapters.http.app import create_app
from adapters.http.problems import make_handlers
from adapters.settings import Settings
from domain.decoding import decode_stored
from domain.events import SignerKeyPublished
from domain.ports import StoreUnavailable
from domain.streams import Topology
from ops.devstack.nats_server import NatsServer
from tests.conftest import Servers


def client_for(app: Litestar) -> httpx.AsyncClient:
    # In the test's own event loop, where the pool and the NATS connection live.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cp")


B3IQ = str(Path(sys.executable).parent / "b3iq")


@pytest.fixture
async def plane(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    settings = Settings(
        nats_url=servers.nats_url,
        database_url=database_url,
        stream_prefix=topology.prefix,
        data_dir=tmp_path,
    )
    plane = await bootstrap(settings)
    yield plane
    for spec in topology.streams:
        await plane.store.js.delete_stream(spec.name)  # type: ignore[attr-defined]
    await plane.close()


async def test_health_ready_keys_schema_metrics(plane: ControlPlane) -> None:
    async with client_for(create_app(plane)) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready"
        assert {p["projection"] for p in body["projections"]} == {
            "signer_keys",
            "nodes",
            "heartbeats",
            "protocol",
            "commands",
            "routes",
            "route_probes",
            "benchmarks",
            "billing",
            "node_receipts",
        }
        keys = (await client.get("/v1/keys")).json()["keys"]
        assert [k["key_id"] for k in keys] == [plane.signer.key_id]
        schema = (await client.get("/schema/openapi.json")).json()
        assert {"/health", "/ready", "/v1/keys"} <= set(schema["paths"])
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "b3iq_requests_total" in metrics.text


async def test_the_signing_key_is_on_the_ledger_once(plane: ControlPlane) -> None:
    await plane.publish_signing_key()  # a restart publishes nothing new
    subject = plane.topology.subject("key", plane.signer.key_id)
    stored = await plane.store.last(subject)
    assert stored is not None
    assert stored.seq == 1
    event = decode_stored(stored).event
    assert isinstance(event, SignerKeyPublished)
    assert event.key_id == plane.signer.key_id


async def test_ready_is_503_while_nats_is_down(
    servers: Servers, database_url: str, tmp_path: Path
) -> None:
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    settings = Settings(nats_url=nats.url, database_url=database_url, data_dir=tmp_path)
    plane = await bootstrap(settings)
    try:
        async with client_for(create_app(plane)) as client:
            assert (await client.get("/ready")).status_code == 200
            nats.kill()
            down = await client.get("/ready")
            assert down.status_code == 503
            assert down.headers["retry-after"] == "2"
            assert down.json()["nats"]["ok"] is False
            nats.start()
            for _ in range(100):  # the client reconnects by itself
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await client.get("/ready")).status_code == 200
    finally:
        await plane.close()
        nats.stop()


async def test_ready_is_503_while_postgres_is_down(plane: ControlPlane) -> None:
    assert plane.pool is not None
    await plane.pool.close()
    plane.pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/x", min_size=0)
    async with client_for(create_app(plane)) as client:
        down = await client.get("/ready")
        assert down.status_code == 503
        assert down.json()["postgres"]["ok"] is False


async def test_unavailable_dependencies_become_503_problems_not_tracebacks() -> None:
    @get("/append")
    async def append() -> None:
        raise StoreUnavailable("nats down")

    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    app = Litestar([append, boom], exception_handlers=make_handlers(3))  # type: ignore[arg-type]
    async with client_for(app) as client:
        response = await client.get("/append")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert response.json()["error"]["code"] == "service_unavailable"
        crash = await client.get("/boom")
        assert crash.status_code == 500
        assert crash.json() == {
            "error": {
                "status": 500,
                "title": "Internal Server Error",
                "detail": "unexpected failure",
                "code": "internal_error",
            }
        }
        missing = await client.get("/nope")
        assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("B3IQ_NATS_URL", "nats://127.0.0.1:1"),
        ("B3IQ_DATABASE_URL", "postgresql://postgres:hunter2@127.0.0.1:1/none"),
    ],
)
def test_serve_names_an_unreachable_server_and_exits_nonzero(
    servers: Servers, tmp_path: Path, variable: str, value: str
) -> None:
    env = {
        **os.environ,
        "B3IQ_NATS_URL": servers.nats_url,
        "B3IQ_DATABASE_URL": servers.admin_dsn,
        "B3IQ_DATA_DIR": str(tmp_path),
        variable: value,
    }
    result = subprocess.run(
        [B3IQ, "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr


async def test_the_latest_checkpoint_is_published_for_pinning(plane: ControlPlane) -> None:
    async with client_for(create_app(plane)) as client:
        missing = await client.get("/v1/audit/checkpoint")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        made = await Checkpointer(plane.store, plane.recorder, plane.topology).checkpoint()
        assert made is not None
        head = (await client.get("/v1/audit/checkpoint")).json()
    assert head["seq"] == made.tree_size + 1
    assert head["data"]["body"]["payload"]["root"] == made.root
