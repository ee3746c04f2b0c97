"""One lane per customer: decisions that arrive while an append is in flight go out
together as the next one (group commit).

Each caller awaits its own decision as if it were alone. A lane has at most one append in
flight, so a process never races itself on a customer's subject; other processes still
can, and the Recorder's conditional append makes every batch re-decide on their tail.
"""

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from adapters.recorder import Decide, Recorder
from domain.billing.books import Op, Rules, account_of, decide_batch
from domain.billing.state import AccountState
from domain.decoding import Decoded
from domain.events import Event
from domain.nodes import Refused
from domain.ports import AppendResult, ConcurrencyConflict

R = TypeVar("R")
WAITING_MAY_FREE = frozenset(
    {"insufficient_balance", "gateway_spend_cap_exceeded", "too_many_open_reservations"}
)
"""Refusals a waiting settlement may lift (it releases the rest of a hold, closes it)."""
_Pending = tuple[Op[Any], "asyncio.Future[Any]"]


class AccountLanes:
    CONFLICT_PATIENCE_S = 10.0
    """How long a decision keeps trying against other processes' appends before the
    conflict is its caller's (who sees a 409, retry later)."""
    QUICK_ROUNDS = 3
    """Rounds retried at once; after them, a growing, jittered pause before each."""
    MAX_PAUSE_S = 0.05

    def __init__(
        self,
        recorder: Recorder,
        rules: Rules,
        *,
        clock: Callable[[], datetime],
        max_batch: int = 256,
    ) -> None:
        self.recorder = recorder
        self.rules = rules
        self._clock = clock
        self._max_batch = max_batch
        self._pending: dict[str, list[_Pending]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._later: dict[str, list[_Pending]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.seen: dict[str, AccountState] = {}
        """The latest account each lane decided on (a hint for reads, never for money)."""

    def subject(self, customer_id: str) -> str:
        return self.recorder.topology.subject("customer", customer_id)

    async def submit(self, customer_id: str, op: Op[R], *, after_s: float = 0.0) -> R:
        """The decision's outcome once its events are on the log; raises its Refused.

        ``after_s``: the decision may wait this long, gathering with others that may wait
        too, and all of them go out as one append. A settlement is three events, and
        JetStream syncs a batch of several to disk while holding the stream: appended one
        by one they held up the next request's reservation; gathered, they hold it up
        once per ``after_s``."""
        self.subject(customer_id)  # a bad id fails here, alone
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if after_s > 0:
            self._later.setdefault(customer_id, []).append((op, future))
            if customer_id not in self._timers:
                self._timers[customer_id] = loop.call_later(after_s, self._due, customer_id)
        else:
            self._pending.setdefault(customer_id, []).append((op, future))
            self._start(customer_id)
        return await future

    def _due(self, customer_id: str) -> None:
        """What waits for ``customer_id`` goes out now."""
        timer = self._timers.pop(customer_id, None)
        if timer is not None:
            timer.cancel()
        self._pending.setdefault(customer_id, []).extend(self._later.pop(customer_id, []))
        self._start(customer_id)

    def _start(self, customer_id: str) -> None:
        if customer_id not in self._running:
            task = asyncio.create_task(self._drain(customer_id, self.subject(customer_id)))
            self._running[customer_id] = task

    async def _drain(self, customer_id: str, subject: str) -> None:
        try:
            while pending := self._pending.get(customer_id):
                batch = pending[: self._max_batch]
                del pending[: self._max_batch]
                await self._send(customer_id, subject, batch)
        finally:
            self._running.pop(customer_id, None)
            if not self._pending.get(customer_id):
                self._pending.pop(customer_id, None)

    async def _send(self, customer_id: str, subject: str, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._decide(customer_id, subject, [op for op, _ in batch])
        except Exception as exc:  # the log is unreachable, or contention outlasted retries
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        again: list[_Pending] = []
        for (op, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller went away
                continue
            if isinstance(outcome, Refused):
                if outcome.code in WAITING_MAY_FREE and self._later.get(customer_id):
                    again.append((op, future))
                else:
                    future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if again:  # settlements waiting to be sent may free what it lacked: them first
            self._due(customer_id)
            self._pending[customer_id].extend(again)

    async def _decide(self, customer_id: str, subject: str, ops: list[Op[Any]]) -> list[Any]:
        outcomes: list[Any] = []

        def decide(tail: Decoded | None) -> list[Event]:
            state = account_of(tail.event) if tail is not None else None
            events, decided = decide_batch(state, ops, self.rules, self._clock())
            outcomes[:] = decided
            after = account_of(events[-1]) if events else state
            if after is not None:
                self.seen[customer_id] = after
            return events

        if await self._record(subject, decide) is None:
            # Nothing appended, so nothing proved the tail current: decide on a fresh read.
            self.recorder.forget(subject)
            await self._record(subject, decide)
        return outcomes

    async def _record(self, subject: str, decide: Decide) -> AppendResult | None:
        """Rounds of the Recorder's retries until ``CONFLICT_PATIENCE_S`` has passed.

        Every round re-decides on the real tail, so more rounds are always safe, and each
        lost one means another process's decision landed. A fixed count of rounds was not
        enough: two processes hammering one customer could starve one of them past it,
        and its callers got a 409 for contention alone. After the first few rounds, a
        growing, jittered pause lets the other process's appends through."""
        deadline = time.monotonic() + self.CONFLICT_PATIENCE_S
        for round_no in itertools.count():
            try:
                return await self.recorder.record(subject, decide)
            except ConcurrencyConflict:
                if time.monotonic() >= deadline:
                    raise
            if round_no >= self.QUICK_ROUNDS:
                pause = min(self.MAX_PAUSE_S, 0.001 * 2 ** (round_no - self.QUICK_ROUNDS))
                await asyncio.sleep(random.uniform(0, pause))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Send what waits now, and wait for every lane to finish what it holds."""
        for customer_id in list(self._timers):
            self._due(customer_id)
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
