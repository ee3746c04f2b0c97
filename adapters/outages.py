"""Failures that mean "a server is away for now": callers wait and retry, clients get 503."""

import asyncio
import contextlib
import time

import asyncpg

from adapters.postgres import DatabaseUnavailable
from domain.envelope import StoredEvent
from domain.ports import EventReader, StoreUnavailable

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


async def next_batch_through_outages(
    reader: EventReader, max_count: int, timeout: float, patience: float = 30.0
) -> list[StoredEvent]:
    """The next events of a read up to a head the caller has seen (an audit, a rebuild):
    ``reader.next_batch``, asked again while the store is away or answers nothing, for up
    to ``patience`` seconds, then StoreUnavailable. A reader resumes after the last event
    it returned, so such a read rides through a leader change or a restarted member; and
    it never takes an empty answer for the end, which stopped an audit short, unnoticed."""
    give_up = time.monotonic() + patience
    while True:
        try:
            batch = await reader.next_batch(max_count, timeout)
        except StoreUnavailable:
            if time.monotonic() > give_up:
                raise
        else:
            if batch:
                return batch
            if time.monotonic() > give_up:
                raise StoreUnavailable(f"nothing more to read for {patience:.0f} s")
        await asyncio.sleep(0.25)
