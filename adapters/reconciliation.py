"""`b3iq billing reconcile`: the pure fold over the log, held against Postgres.

The read models are read in one REPEATABLE READ snapshot together with the billing
projection's checkpoint, and the log is folded exactly up to that checkpoint, so a
projector running meanwhile cannot show up as a discrepancy.
"""

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime

import asyncpg
import msgspec

from adapters.outages import wait_or_stop
from adapters.recorder import Recorder
from domain.billing.discrepancy import Discrepancy
from domain.billing.read_model_check import (
    compare_customers,
    compare_payouts,
    compare_receipts,
    compare_reservations,
)
from domain.billing.reconcile import LedgerFold
from domain.decoding import Decoded
from domain.envelope import StoredEvent
from domain.events import Event, ReconciliationCompleted
from domain.streams import Topology
from projections import billing_reconcile_queries as q

log = logging.getLogger("b3iq.reconcile")


class NodeTotal(msgspec.Struct, frozen=True):
    node_id: str
    payouts: int
    owed_wei: str
    fees_wei: str


class Report(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    up_to_seq: int
    events: int
    customers: int
    reservations: int
    open_reservations: int
    receipts: int
    payouts: int
    payout_total_wei: str
    pending_payouts: int
    compared_read_models: bool
    nodes: list[NodeTotal]
    by_code: dict[str, int]
    discrepancies: list[Discrepancy]

    def summary(self) -> ReconciliationCompleted:
        return ReconciliationCompleted(
            up_to_seq=self.up_to_seq,
            events=self.events,
            customers=self.customers,
            reservations=self.reservations,
            open_reservations=self.open_reservations,
            receipts=self.receipts,
            payouts=self.payouts,
            payout_total_wei=self.payout_total_wei,
            discrepancies=len(self.discrepancies),
            by_code=self.by_code,
        )


async def fold_log(
    events: AsyncIterator[StoredEvent], ledger: str, up_to: int | None = None
) -> LedgerFold:
    fold = LedgerFold()
    with _collector_paused():
        async for stored in events:
            if stored.stream != ledger:
                continue
            if up_to is not None and stored.seq > up_to:
                break
            fold.feed_stored(stored)
    return fold


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The fold keeps every reservation and payout to its end and makes no reference
    cycles, yet each collection its allocations triggered walked that whole growing heap:
    an eighth of a reconcile. Cycles made meanwhile (by asyncio, say) are collected after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def reconcile(
    events: AsyncIterator[StoredEvent],
    topology: Topology,
    pool: asyncpg.Pool | None,
) -> Report:
    """Fold the ledger (up to the read models' checkpoint when ``pool`` is given) and
    compare; without a pool only the log's own consistency is checked."""
    if pool is None:
        fold = await fold_log(events, topology.ledger.name)
        return _report(fold, fold.finish(), compared=False)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        up_to = await q.projected_seq(conn)
        fold = await fold_log(events, topology.ledger.name, up_to)
        found = fold.finish()
        windows: dict[int, list[str]] = {}
        for cid, c in fold.customers.items():
            windows.setdefault(c.window_s, []).append(cid)
        as_of = fold.last_at or datetime.now(UTC)
        found.extend(
            compare_customers(
                fold,
                await q.customers(conn),
                await q.entry_counts(conn),
                await q.debits_since(conn, windows, as_of),
            )
        )
        found.extend(compare_reservations(fold, await q.reservations(conn)))
        found.extend(compare_payouts(fold, await q.payouts(conn)))
        found.extend(compare_receipts(fold, await q.receipt_hashes(conn)))
    return _report(fold, found, compared=True)


def _report(fold: LedgerFold, found: list[Discrepancy], *, compared: bool) -> Report:
    nodes = [
        NodeTotal(node_id, n, str(owed), str(fees))
        for node_id, (n, owed, fees) in sorted(fold.node_totals().items())
    ]
    return Report(
        ok=not found,
        up_to_seq=fold.up_to_seq,
        events=fold.events,
        customers=len(fold.customers),
        reservations=len(fold.reservations),
        open_reservations=sum(1 for r in fold.reservations.values() if r.outcome is None),
        receipts=len(fold.receipts),
        payouts=len(fold.payouts),
        payout_total_wei=str(sum(p.amount for p in fold.payouts.values())),
        pending_payouts=sum(1 for _ in fold.pending_payouts()),
        compared_read_models=compared,
        nodes=nodes,
        by_code=dict(Counter(str(d.code) for d in found)),
        discrepancies=found,
    )


async def record_summary(recorder: Recorder, report: Report, now: datetime) -> None:
    """Append the signed ``ReconciliationCompleted`` on the day's reconciliation subject."""
    subject = recorder.topology.subject("reconciliation", now.strftime("%Y%m%d"))
    summary = report.summary()

    def decide(_: Decoded | None) -> list[Event]:
        return [summary]

    await recorder.record(subject, decide)


async def every(
    interval_s: float,
    once: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
) -> None:
    """Run ``once`` every ``interval_s`` until ``stop``; a failed run is logged, not fatal."""
    while not stop.is_set():
        try:
            await once()
        except Exception:
            log.exception("reconciliation failed")
        await wait_or_stop(stop, interval_s)
