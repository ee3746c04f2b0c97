"""Values read from the read models or the log, kept a while and refreshed behind the
requests that use them.

The gateway reuses a key's owner, a model's candidates and the price book for a second.
Reloaded in the request that found them a second old, each was a query on that request's
path (15-20 ms for the candidates on a loaded 2-core machine): most of the gateway's p99.
Now a value past ``fresh_s`` is still served while one load runs in the background, up
to ``stale_s``; only a value older than that (or none) is waited for.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("b3iq.refreshing")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Refreshing(Generic[K, V]):
    def __init__(
        self,
        what: str,
        *,
        fresh_s: float,
        stale_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert stale_s >= fresh_s
        self.what = what
        self.fresh_s, self.stale_s = fresh_s, stale_s
        self.max_keys = max_keys
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Task[None]] = {}
        self._forgotten = 0
        """Bumped by ``forget``: a load begun before it must not store what it read."""

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        now = self._clock()
        known = self._values.get(key)
        if known is not None:
            age = now - known[0]
            if age <= self.fresh_s:
                return known[1]
            if age <= self.stale_s:
                if key not in self._loading:
                    task = asyncio.create_task(self._refresh(key, load))
                    self._loading[key] = task
                return known[1]
        forgotten = self._forgotten
        value = await load()
        if forgotten == self._forgotten:
            self._store(key, value, now)
        return value

    def forget(self) -> None:
        """Load every value afresh next time (what a load under way reads is dropped)."""
        self._values.clear()
        self._forgotten += 1

    async def _refresh(self, key: K, load: Callable[[], Awaitable[V]]) -> None:
        started, forgotten = self._clock(), self._forgotten
        try:
            value = await load()
        except Exception as exc:  # served stale meanwhile; past stale_s a request loads
            log.warning("refreshing %s failed: %s", self.what, type(exc).__name__)
        else:
            if forgotten == self._forgotten:
                self._store(key, value, started)
        finally:
            self._loading.pop(key, None)

    def _store(self, key: K, value: V, at: float) -> None:
        if len(self._values) >= self.max_keys and key not in self._values:
            self._values.clear()
        self._values[key] = (at, value)
