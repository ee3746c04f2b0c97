"""A lane's decision outlasts other processes' appends: it keeps re-deciding on the real
tail until they let it through, and gives the conflict to its caller only after a while."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.account_lanes import AccountLanes
from domain.billing.books import Rules
from domain.ports import AppendResult, ConcurrencyConflict
from domain.streams import Topology


class Contended:
    """A Recorder whose first ``losses`` rounds each lose to another process."""

    def __init__(self, losses: int) -> None:
        self.losses = losses
        self.rounds = 0
        self.topology = Topology()

    async def record(self, subject: str, decide: Any) -> AppendResult:
        self.rounds += 1
        if self.rounds <= self.losses:
            raise ConcurrencyConflict(subject)
        return AppendResult("LEDGER", 1, 1)


def lanes(recorder: Contended, patience_s: float) -> AccountLanes:
    lanes = AccountLanes(recorder, Rules(), clock=lambda: datetime.now(UTC))  # type: ignore[arg-type]
    lanes.CONFLICT_PATIENCE_S = patience_s
    lanes.MAX_PAUSE_S = 0.001
    return lanes


def _decide(_: object) -> Sequence[object]:
    return []


async def test_a_decision_outlasts_many_lost_rounds() -> None:
    recorder = Contended(losses=12)  # a fixed four rounds gave up here, a 409 to the caller
    assert await lanes(recorder, 10.0)._record("s", _decide) is not None
    assert recorder.rounds == 13


async def test_the_conflict_is_the_callers_once_patience_runs_out() -> None:
    recorder = Contended(losses=10**9)
    with pytest.raises(ConcurrencyConflict):
        await lanes(recorder, 0.05)._record("s", _decide)
    assert recorder.rounds > 3
