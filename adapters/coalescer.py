"""Calls that arrive in the same turn of the event loop go out as one batch.

Under load many requests reach the same step together; each awaits ``submit`` as if it
were alone, and the first of a turn schedules one flush for everything submitted before
the loop comes round again. Batches never wait for company: an idle server sends a batch
of one at once, a busy one sends bigger batches, and several batches may be in flight.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchCall = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]
"""Results in the order of the items; an Exception in a slot fails that item alone."""


class Coalescer(Generic[T, R]):
    def __init__(self, call: BatchCall[T, R], max_batch: int = 4096) -> None:
        self._call = call
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        """Batches in flight (a task must be referenced until it ends)."""

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            task = asyncio.create_task(self._send(pending[start : start + self._max_batch]))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._call([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if future.done():  # a caller that went away cancelled its own
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def drain(self) -> None:
        """Wait for every batch already submitted (shutdown, tests)."""
        while self._pending or self._flushing:
            await asyncio.sleep(0)
            if self._flushing:
                await asyncio.gather(*self._flushing, return_exceptions=True)
