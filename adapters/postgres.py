"""PostgreSQL: connection pools and schema migrations (Alembic, over asyncpg)."""

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations
from adapters.urls import redact

MIGRATIONS_DIR = Path(migrations.__file__).parent


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached, or its schema is not the one this code needs."""


def _alembic_config(dsn: str, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    config.attributes["schema"] = schema
    return config


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


async def migrate(dsn: str, schema: str = "public") -> None:
    """Create the schema if needed and bring it to the newest revision."""
    conn = await _connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await conn.close()
    # Alembic's env.py runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(command.upgrade, _alembic_config(dsn, schema), "head")


async def current_revision(conn: asyncpg.Connection, schema: str = "public") -> str | None:
    exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".alembic_version')
    if exists is None:
        return None
    revision: str | None = await conn.fetchval(
        f'SELECT version_num FROM "{schema}".alembic_version'
    )
    return revision


async def require_migrated(pool: asyncpg.Pool, schema: str = "public") -> None:
    async with pool.acquire() as conn:
        found = await current_revision(conn, schema)
    if found != head_revision():
        raise DatabaseUnavailable(
            f"database schema {schema!r} is at revision {found or 'none'}, this code needs "
            f"{head_revision()}: run `b3iq migrate` first"
        )


async def create_pool(
    dsn: str, *, schema: str = "public", min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=5,
            server_settings={"search_path": schema, "application_name": "b3iq"},
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {redact(dsn)}: {exc}") from exc
    assert pool is not None
    return pool


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {redact(dsn)}: {exc}") from exc
