"""Folding a log pauses the cyclic garbage collector, and always gives it back."""

import gc
from collections.abc import AsyncIterator

import pytest

from adapters.reconciliation import fold_log
from domain.envelope import StoredEvent
from domain.signing import Signer
from domain.streams import Topology
from ops.bench.billing_workload import Workload, take

TOPOLOGY = Topology()


async def log(
    events: list[StoredEvent], fail_after: int | None = None
) -> AsyncIterator[StoredEvent]:
    for n, e in enumerate(events):
        if n == fail_after:
            raise ConnectionError("the log went away")
        assert not gc.isenabled()  # paused while the fold runs
        yield e


@pytest.mark.parametrize("fail_after", [None, 5])
async def test_the_collector_is_back_on_after_a_fold_whole_or_failed(
    fail_after: int | None,
) -> None:
    events = list(take(Workload(TOPOLOGY, Signer(b"\x0c" * 32)).events(), 50))
    assert gc.isenabled()
    if fail_after is None:
        fold = await fold_log(log(events, None), TOPOLOGY.ledger.name)
        assert fold.events == len(events)
    else:
        with pytest.raises(ConnectionError):
            await fold_log(log(events, fail_after), TOPOLOGY.ledger.name)
    assert gc.isenabled()
