"""Many projections caught up together from one read of their stream (rebuilds, replays)."""

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from adapters.outages import next_batch_through_outages
from adapters.projector import ProjectionRunner, by_type
from domain.envelope import StoredEvent
from domain.ports import EventStore

Progress = Callable[[str, int, int], None]
"""(what, position, target)"""


class StreamReplay:
    """Runners of one stream, each with the sequence to stop at, fed by a single reader:
    every event is read, and its body decoded, once for all of them. (Each runner reading
    the stream itself read the ledger once per projection: most of a rebuild's time.)
    The runners apply each batch concurrently, each in its own transaction."""

    def __init__(
        self,
        store: EventStore,
        stream: str,
        targets: Sequence[tuple[ProjectionRunner, int]],
        batch_size: int = 5000,
    ) -> None:
        assert all(runner.stream == stream for runner, _ in targets)
        self.store = store
        self.stream = stream
        self.targets = targets
        self.batch_size = batch_size

    async def run(self, progress: Progress | None = None, timeout: float = 3600.0) -> int:
        """Catch every runner up to its target; returns how many events were read."""
        for runner, _ in self.targets:
            await runner.load()
        behind = [(r, t) for r, t in self.targets if r.position < t]
        if not behind:
            return 0
        position = min(r.position for r, _ in behind)
        end = max(t for _, t in behind)
        deadline = time.monotonic() + timeout
        reader = await self.store.reader(self.stream, position + 1)
        read = 0
        try:
            while position < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.stream} replay stuck at {position}")
                batch = await next_batch_through_outages(
                    reader, min(self.batch_size, end - position), 1.0
                )
                typed = by_type(batch)
                await asyncio.gather(
                    *(
                        runner.apply(mine, typed)
                        for runner, target in behind
                        if (mine := _between(batch, runner.position, target))
                    )
                )
                position, read = batch[-1].seq, read + len(batch)
                if progress:
                    progress(self.stream, position, end)
            await asyncio.gather(*(runner.flush() for runner, _ in behind))
        finally:
            await reader.close()
        return read


async def replay_all(
    store: EventStore,
    targets: Iterable[tuple[ProjectionRunner, int]],
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> int:
    """Catch every runner up to its target, one ``StreamReplay`` per stream, the streams
    at once; returns how many events were read."""
    by_stream: defaultdict[str, list[tuple[ProjectionRunner, int]]] = defaultdict(list)
    for runner, target in targets:
        by_stream[runner.stream].append((runner, target))
    replays = [StreamReplay(store, s, t, batch_size) for s, t in by_stream.items()]
    return sum(await asyncio.gather(*(r.run(progress) for r in replays)))


def _between(batch: list[StoredEvent], after: int, until: int) -> list[StoredEvent]:
    if after < batch[0].seq and batch[-1].seq <= until:
        return batch  # the common case: every runner wants all of it
    return [e for e in batch if after < e.seq <= until]
