"""Requests waiting for one model, and the queue_health that their number implies."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from node.errors import NodeError


class QueueGauge:
    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.depth = 0
        """Requests admitted and not finished: the running one plus those waiting."""

    @property
    def health(self) -> str:
        if self.depth >= self.max_queue:
            return "blocked"
        return "busy" if self.depth > 1 else "healthy"

    @contextmanager
    def slot(self, unavailable: Callable[[], NodeError | None]) -> Iterator[None]:
        error = unavailable()
        if error is not None:
            raise error
        if self.depth >= self.max_queue:
            raise NodeError(
                429, "queue_full", "too many requests are waiting for this model; retry later"
            )
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


class QueuedRuntime:
    """What every runtime reports about its queue: a failed runtime is unhealthy."""

    _gauge: QueueGauge
    failure: str | None

    @property
    def queue_depth(self) -> int:
        return self._gauge.depth

    @property
    def queue_health(self) -> str:
        return "unhealthy" if self.failure else self._gauge.health
