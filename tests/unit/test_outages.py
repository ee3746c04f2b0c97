"""A long read asks its reader again while the store is away, within its patience."""

import pytest

from adapters.outages import next_batch_through_outages
from domain.envelope import StoredEvent
from domain.ports import StoreUnavailable

EVENT = StoredEvent("S", 7, "b3iq.node.n1", b"{}")


class Flaky:
    """Refuses ``failures`` times (as a reader whose consumer was lost does), then answers
    nothing ``empty`` times (a restarted member catching up), then reads."""

    def __init__(self, failures: int, empty: int = 0) -> None:
        self.failures = failures
        self.empty = empty
        self.calls = 0

    async def next_batch(self, max_count: int, timeout: float) -> list[StoredEvent]:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreUnavailable("read S: NotFoundError")
        if self.calls <= self.failures + self.empty:
            return []
        return [EVENT]

    async def close(self) -> None:
        pass


async def test_a_read_lost_to_an_outage_is_asked_again() -> None:
    reader = Flaky(failures=2)
    assert await next_batch_through_outages(reader, 10, 0.1) == [EVENT]
    assert reader.calls == 3


async def test_an_empty_answer_is_asked_again_never_taken_for_the_end() -> None:
    reader = Flaky(failures=1, empty=2)
    assert await next_batch_through_outages(reader, 10, 0.1) == [EVENT]
    assert reader.calls == 4
    silent = Flaky(failures=0, empty=1_000)
    with pytest.raises(StoreUnavailable):
        await next_batch_through_outages(silent, 10, 0.1, patience=0.3)


async def test_an_outage_longer_than_the_patience_is_raised() -> None:
    reader = Flaky(failures=1_000)
    with pytest.raises(StoreUnavailable):
        await next_batch_through_outages(reader, 10, 0.1, patience=0.3)
    assert 2 <= reader.calls < 10
