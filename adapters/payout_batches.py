"""Payout batches: pending node payouts under one Merkle root, settled through a
``SettlementTarget``. Each transition is an event on ``payout_batch.<batch_id>``.

No payout can land in two batches. ``create`` reads the unbatched payouts as of one exact
ledger sequence S: the billing read models and their checkpoint P in one snapshot, then the
ledger's own tail P+1..S (new payouts in, payouts claimed by ``PayoutBatchCreated`` out).
The claim is appended with ``expected_stream_seq=S``: it lands only if nothing at all was
appended to the ledger after S, so no other batch can have claimed a row since it was read.
If anything was, the append fails without writing and we read again (bounded, like the
checkpointer). A lagging or stopped projector costs a longer tail, never a double claim.
"""

import asyncio
import random
from collections.abc import Sequence
from typing import TypeVar

import asyncpg
import msgspec

from adapters.recorder import Decide, Recorder
from adapters.subject_history import subject_history
from domain.decoding import Decoded, decode_stored
from domain.events import (
    Event,
    NodePayoutCreated,
    PayoutBatchCreated,
    PayoutBatchEvent,
    PayoutBatchFinalized,
    PayoutBatchPreviewed,
    PayoutBatchSubmitted,
    PayoutRow,
)
from domain.ids import uuid7
from domain.nodes import Refused
from domain.payout_batches import (
    CREATED,
    STATE_AFTER,
    SUBMITTED,
    PayoutProof,
    head_of,
    propose,
    prove_row,
    transition_refusal,
)
from domain.ports import ConcurrencyConflict, SettlementTarget, StoreUnavailable
from projections import billing_reconcile_queries as rq
from projections import payout_batch_queries as q

AGGREGATE = "payout_batch"
_T = TypeVar("_T", PayoutBatchSubmitted, PayoutBatchFinalized)


class Pending(msgspec.Struct, frozen=True):
    up_to_seq: int
    rows: list[PayoutRow]


class BatchRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A batch as the log holds it: its events in order, and the rows it was made of."""

    batch_id: str
    state: str
    made: PayoutBatchPreviewed | PayoutBatchCreated
    submitted: PayoutBatchSubmitted | None = None
    finalized: PayoutBatchFinalized | None = None


class PayoutBatches:
    def __init__(
        self,
        recorder: Recorder,
        pool: asyncpg.Pool,
        target: SettlementTarget,
        *,
        max_attempts: int = 20,
    ) -> None:
        self.recorder = recorder
        self.store = recorder.store
        self.topology = recorder.topology
        self.pool = pool
        self.target = target
        self.max_attempts = max_attempts

    def subject(self, batch_id: str) -> str:
        return self.topology.subject(AGGREGATE, batch_id)

    # --- making batches -----------------------------------------------------------------

    async def preview(self, by: str) -> PayoutBatchPreviewed:
        """Append a ``PayoutBatchPreviewed`` of the pending payouts: it claims nothing."""
        pending = await self.pending()
        batch_id = uuid7()
        (event,) = propose(batch_id, pending.rows, pending.up_to_seq, by, create=False)
        await self.recorder.record(self.subject(batch_id), _new_batch([event]))
        assert isinstance(event, PayoutBatchPreviewed)
        return event

    async def create(self, by: str) -> PayoutBatchCreated:
        """Preview and claim every pending payout in one append, conditioned on the ledger's
        last sequence the rows were read at (see the module docstring)."""
        for attempt in range(self.max_attempts):
            pending = await self.pending()
            batch_id = uuid7()
            events = propose(batch_id, pending.rows, pending.up_to_seq, by, create=True)
            try:
                await self.recorder.record(
                    self.subject(batch_id),
                    _new_batch(events),
                    expected_stream_seq=pending.up_to_seq,
                )
            except ConcurrencyConflict:
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))  # noqa: S311
                continue
            created = events[-1]
            assert isinstance(created, PayoutBatchCreated)
            return created
        raise Refused("busy", f"the ledger moved on {self.max_attempts} times; try again")

    async def pending(self) -> Pending:
        """Payouts in no created batch, exactly as of the ledger's last sequence."""
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            projected = await rq.projected_seq(conn)
            unbatched = await q.unbatched_payouts(conn)
        rows = {r.payout_id: r for r in unbatched}
        ledger = self.topology.ledger.name
        _, head = await self.store.bounds(ledger)
        if head <= projected:
            return Pending(projected, sorted(rows.values(), key=lambda r: r.payout_id))
        customer = self.topology.subject("customer", "x")[:-1]
        batches = self.subject("x")[:-1]
        reader = await self.store.reader(ledger, projected + 1)
        seen = projected
        try:
            while seen < head:
                got = await reader.next_batch(min(5000, head - seen), 2.0)
                if not got:
                    raise StoreUnavailable(f"{ledger}: read stopped at {seen} of {head}")
                for stored in got:
                    if stored.seq > head:
                        seen = head
                        break
                    seen = stored.seq
                    if stored.subject.startswith((customer, batches)):
                        _fold_pending(rows, decode_stored(stored).event)
        finally:
            await reader.close()
        return Pending(head, sorted(rows.values(), key=lambda r: r.payout_id))

    # --- settling -----------------------------------------------------------------------

    async def submit(self, batch_id: str, by: str) -> PayoutBatchSubmitted:
        batch = await self.batch(batch_id)
        if batch.state == SUBMITTED and batch.submitted is not None:
            return batch.submitted
        if batch.state != CREATED:
            raise Refused("conflict", f"batch {batch_id} is {batch.state}, not created")
        reference = await self.target.submit(head_of(batch.made))
        event = PayoutBatchSubmitted(
            batch_id=batch_id,
            merkle_root=batch.made.merkle_root,
            target=self.target.name,
            reference=reference,
            by=by,
        )
        return await self._transition(event, PayoutBatchSubmitted)

    async def finalize(self, batch_id: str, by: str) -> PayoutBatchFinalized:
        batch = await self.batch(batch_id)
        if batch.finalized is not None:
            return batch.finalized
        if batch.submitted is None:
            raise Refused("conflict", f"batch {batch_id} is {batch.state}, not submitted")
        confirmation = await self.target.finalize(head_of(batch.made), batch.submitted.reference)
        event = PayoutBatchFinalized(
            batch_id=batch_id,
            merkle_root=batch.made.merkle_root,
            target=batch.submitted.target,
            reference=confirmation,
            by=by,
        )
        return await self._transition(event, PayoutBatchFinalized)

    async def _transition(self, event: _T, kind: type[_T]) -> _T:
        """Append ``event`` if the batch's state allows it; a concurrent caller that got
        there first with the same reference is the same transition (idempotent)."""
        won: list[_T] = [event]

        def decide(tail: Decoded | None) -> list[Event]:
            last = None if tail is None else tail.event
            state = STATE_AFTER[type(last)] if isinstance(last, PayoutBatchEvent) else None
            if isinstance(last, kind) and last.reference == event.reference:
                won[0] = last
                return []
            why = transition_refusal(state, event)
            if why is not None:
                raise Refused("conflict", why)
            return [event]

        await self.recorder.record(self.subject(event.batch_id), decide)
        return won[0]

    # --- reading ------------------------------------------------------------------------

    async def batch(self, batch_id: str) -> BatchRecord:
        """The batch from the log (not the read model): its rows and transitions."""
        history = await subject_history(self.store, self.subject(batch_id))
        events = [decode_stored(s).event for s in history]
        made: PayoutBatchPreviewed | PayoutBatchCreated | None = None
        submitted, finalized, state = None, None, None
        for e in events:
            if isinstance(e, PayoutBatchPreviewed | PayoutBatchCreated):
                made = e
            elif isinstance(e, PayoutBatchSubmitted):
                submitted = e
            elif isinstance(e, PayoutBatchFinalized):
                finalized = e
            if isinstance(e, PayoutBatchEvent):
                state = STATE_AFTER[type(e)]
        if made is None or state is None:
            raise Refused("not_found", f"no payout batch {batch_id}")
        return BatchRecord(
            batch_id=batch_id, state=state, made=made, submitted=submitted, finalized=finalized
        )

    async def prove(self, batch_id: str, payout_id: str) -> PayoutProof:
        """An inclusion proof of one payout's row under the batch root (from the log)."""
        batch = await self.batch(batch_id)
        return prove_row(batch_id, batch.made.rows, payout_id)

    async def recent(self, limit: int = 100) -> list[q.BatchSummary]:
        async with self.pool.acquire() as conn:
            return await q.batches(conn, limit)


def _new_batch(events: Sequence[Event]) -> Decide:
    def decide(tail: Decoded | None) -> list[Event]:
        if tail is not None:  # a fresh uuid7 never collides; refuse rather than extend
            raise Refused("conflict", "that batch id is taken")
        return list(events)

    return decide


def _fold_pending(rows: dict[str, PayoutRow], event: Event) -> None:
    if isinstance(event, NodePayoutCreated):
        rows[event.payout_id] = PayoutRow(
            payout_id=event.payout_id,
            node_id=event.node_id,
            receipt_hash=event.receipt_hash,
            amount_wei=event.amount_wei,
        )
    elif isinstance(event, PayoutBatchCreated):
        for row in event.rows:
            rows.pop(row.payout_id, None)


def payout_batches_for(recorder: Recorder, pool: asyncpg.Pool) -> PayoutBatches:
    """With the only shipped target, the local anchor (not on-chain)."""
    from adapters.local_anchor import LocalAnchor

    return PayoutBatches(recorder, pool, LocalAnchor(recorder))
