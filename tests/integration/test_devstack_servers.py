"""The dev stack's real NATS and PostgreSQL servers start, serve, restart and keep data."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest

from adapters.jetstream import JetStreamEventStore
from domain.streams import Topology
from ops.devstack.nats_cluster import NatsCluster
from ops.devstack.nats_server import NatsServer, NatsServerError, nats_server_binary
from ops.devstack.postgres_server import PostgresServer, PostgresServerError


async def _fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_nats_jetstream_survives_restart(tmp_path: Path) -> None:
    assert nats_server_binary().is_file()
    with NatsServer(tmp_path / "nats", name="dev") as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        ack = await js.publish("events.a", b"hello")
        assert ack.seq == 1
        await nc.close()

        server.restart()
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        msg = await js.get_msg("EVENTS", 1)
        assert msg.data == b"hello"
        await nc.close()

        server.kill()
        assert not server.is_running()
        server.start()
        nc = await nats.connect(server.url)
        assert (await nc.jetstream().stream_info("EVENTS")).state.messages == 1
        await nc.close()
    assert not server.is_running()


def test_nats_start_failure_names_the_log(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", extra_args=["--no-such-flag"])
    with pytest.raises(NatsServerError, match="exited with code"):
        server.start()


async def test_postgres_serves_and_keeps_data(tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "pg", settings={"work_mem": "8MB"}) as pg:
        assert await _fetchval(pg.dsn(), "select 1") == 1
        assert await _fetchval(pg.dsn(), "show work_mem") == "8MB"

        pg.create_database("app")
        conn = await asyncpg.connect(pg.dsn("app"))
        await conn.execute("create table t (v int); insert into t values (42)")
        await conn.close()
        pg.create_database("app_copy", template="app")
        with pytest.raises(PostgresServerError, match="already exists"):
            pg.create_database("app")

        pg.restart()
        assert await _fetchval(pg.dsn("app"), "select v from t") == 42
        assert await _fetchval(pg.dsn("app_copy"), "select v from t") == 42

        pg.kill()
        assert not pg.is_running()
        pg.start()  # crash recovery from the WAL
        assert await _fetchval(pg.dsn("app"), "select v from t") == 42
    assert not pg.is_running()

    # A new handle on the same data dir reuses it (no initdb).
    with PostgresServer(tmp_path / "pg") as again:
        assert await _fetchval(again.dsn("app"), "select v from t") == 42


async def test_the_dev_cluster_keeps_three_replicas_in_its_domain_behind_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B3IQ_TEST_NATS_PASSWORD", "s3cret")  # the members read it
    with NatsCluster(tmp_path / "cluster", password_variable="B3IQ_TEST_NATS_PASSWORD") as c:
        assert [m.name for m in c.members] == ["n1", "n2", "n3"]
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(c.servers[0].url, allow_reconnect=False)
        url = ",".join(f"nats://b3iq:s3cret@127.0.0.1:{m.client_port}" for m in c.members)
        store = await JetStreamEventStore.connect(url, Topology(), replicas=3)
        try:
            assert (await store.js.account_info()).domain == "b3iq"
            info = await store.js.stream_info(Topology().ledger.name)
            assert info.config.num_replicas == 3
            assert info.cluster is not None
            peers = {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])}
            assert peers == {"n1", "n2", "n3"}
        finally:
            await store.close()
    assert not any(s.is_running() for s in c.servers)
