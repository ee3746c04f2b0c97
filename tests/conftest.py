"""Real servers for the whole test session: our own NATS (JetStream) and PostgreSQL on free
ports in temp dirs, or existing ones named by B3IQ_NATS_URL / B3IQ_DATABASE_URL."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NamedTuple

import asyncpg
import pytest
from hypothesis import settings

from adapters.jetstream import JetStreamEventStore
from adapters.postgres import create_pool, migrate
from domain.signing import Signer
from domain.streams import Topology
from tests.support import jetstream_store

TEMPLATE_DB = "b3iq_test_template"

# Property tests: a modest example count keeps the unit tier fast;
# B3IQ_HYPOTHESIS_PROFILE=thorough runs many more (a soak, not part of CI).
settings.register_profile("fast", max_examples=60, deadline=None, database=None)
settings.register_profile("thorough", max_examples=5000, deadline=None, database=None)
settings.load_profile(os.environ.get("B3IQ_HYPOTHESIS_PROFILE", "fast"))


class Servers(NamedTuple):
    nats_url: str
    admin_dsn: str
    """A database URL with the right to create databases."""

    def dsn(self, database: str) -> str:
        base, _, _ = self.admin_dsn.rpartition("/")
        return f"{base}/{database}"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    from ops.devstack.nats_server import NatsServer
    from ops.devstack.postgres_server import PostgresServer

    nats_url = os.environ.get("B3IQ_NATS_URL")
    admin_dsn = os.environ.get("B3IQ_DATABASE_URL")
    nats = pg = None
    if not nats_url:
        nats = NatsServer(tmp_path_factory.mktemp("nats"))
        nats.start()
        nats_url = nats.url
    if not admin_dsn:
        # Throwaway data: durability settings off make the suite several times faster.
        pg = PostgresServer(
            tmp_path_factory.mktemp("pg"),
            settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
        )
        pg.start()
        admin_dsn = pg.dsn()
    try:
        yield Servers(nats_url, admin_dsn)
    finally:
        if nats:
            nats.stop()
        if pg:
            pg.stop()


@pytest.fixture(scope="session")
async def template_db(servers: Servers) -> str:
    conn = await asyncpg.connect(servers.admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    await migrate(servers.dsn(TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
async def database_url(servers: Servers, template_db: str) -> str:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(servers.admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await conn.close()
    return servers.dsn(name)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture
def topology() -> Topology:
    """Streams and subjects of their own for each test, on the shared server."""
    return Topology(prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def js_store(servers: Servers, topology: Topology) -> AsyncIterator[JetStreamEventStore]:
    async with jetstream_store(servers.nats_url, topology) as store:
        yield store


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
