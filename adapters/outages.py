"""Failures that mean "a server is away for now": callers wait and retry, clients get 503."""

import asyncio
import contextlib

import asyncpg

from adapters.postgres import DatabaseUnavailable
from domain.ports import StoreUnavailable

TRANSIENT: tuple[type[Exception], ...] = (
    StoreUnavailable,
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # includes a connection closed mid-operation
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    # Releasing a connection whose server died mid-query: the pool drops the connection.
    asyncpg.InternalClientError,
    ConnectionError,
    TimeoutError,
)


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
