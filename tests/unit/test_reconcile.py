"""Reconciliation's fold over a generated ledger: clean when the money path held, and each
injected inconsistency named with its customer, reservation, receipt and events."""

from collections.abc import Callable

import msgspec
import pytest

from domain.billing.discrepancy import Code
from domain.billing.reconcile import LedgerFold
from domain.decoding import Decoded, decode_stored
from domain.events import CustomerDebited, Event, NodePayoutCreated, PayoutRow, ReservationReleased
from domain.payout_batches import check_payout_proof, propose, prove_row
from domain.signing import Signer
from domain.streams import Topology
from ops.bench.billing_workload import Workload, take

SIGNER = Signer(b"\x09" * 32)


def _with_event(d: Decoded, event: Event) -> Decoded:
    return Decoded(d.seq, d.subject, d.body, event)


def ledger(count: int = 600) -> list[Decoded]:
    return [decode_stored(s) for s in take(Workload(Topology(), SIGNER).events(), count)]


def fold(events: list[Decoded]) -> LedgerFold:
    f = LedgerFold()
    for d in events:
        f.feed(d)
    f.finish()
    return f


def test_a_clean_ledger_reconciles_and_the_books_match_the_last_events() -> None:
    events = ledger()
    f = fold(events)
    assert f.discrepancies == []
    last = {}
    for d in events:
        if hasattr(d.event, "balance_after_wei"):
            last[d.event.customer_id] = d.event  # type: ignore[attr-defined]
    for cid, e in last.items():
        c = f.customers[cid]
        assert (c.balance, c.reserved) == (int(e.balance_after_wei), int(e.reserved_after_wei))
    assert f.payouts and all(p.batch_id is None for _, p in f.pending_payouts())
    stored = list(take(Workload(Topology(), SIGNER).events(), 600))
    from_bytes = LedgerFold()
    for s in stored:
        from_bytes.feed_stored(s)
    assert from_bytes.finish() == []
    assert {c: (x.balance, x.reserved) for c, x in from_bytes.customers.items()} == {
        c: (x.balance, x.reserved) for c, x in f.customers.items()
    }


def tamper(events: list[Decoded], kind: type[Event], change: Callable[[Event], Event]) -> Decoded:
    """Replace the first event of ``kind`` by ``change(event)``; returns the original."""
    i = next(i for i, d in enumerate(events) if isinstance(d.event, kind))
    original = events[i]
    events[i] = _with_event(original, change(original.event))
    return original


def test_a_payout_that_does_not_add_up_to_its_debit_is_named() -> None:
    events = ledger()
    hit = tamper(
        events,
        NodePayoutCreated,
        lambda e: msgspec.structs.replace(e, amount_wei=str(int(e.amount_wei) + 1)),  # type: ignore[attr-defined,arg-type]
    )
    found = fold(events).discrepancies
    assert [d.code for d in found] == [Code.PAYOUT_AMOUNT]
    payout = hit.event
    assert isinstance(payout, NodePayoutCreated)
    assert found[0].reservation_id == payout.reservation_id
    assert found[0].customer_id == payout.customer_id
    assert [r.seq for r in found[0].events] == [hit.seq - 1, hit.seq]
    assert found[0].events[1].event_id == hit.body.event_id


def test_a_debit_beyond_its_reservation_breaks_the_chain_and_is_named() -> None:
    events = ledger()
    hit = tamper(
        events,
        CustomerDebited,
        lambda e: msgspec.structs.replace(e, amount_wei="999999"),  # type: ignore[arg-type]
    )
    codes = {d.code for d in fold(events).discrepancies}
    assert {Code.DEBIT_OVER_RESERVED, Code.DEBIT_NOT_USAGE, Code.BALANCE_CHAIN} <= codes
    debit = hit.event
    assert isinstance(debit, CustomerDebited)
    named = [d for d in fold(events).discrepancies if d.code == Code.DEBIT_OVER_RESERVED]
    assert named[0].receipt_hash == debit.receipt.receipt_hash


def test_one_receipt_debited_twice_is_named_with_both_debits() -> None:
    events = ledger()
    debits = [d for d in events if isinstance(d.event, CustomerDebited)]
    first, second = debits[0], debits[1]
    assert isinstance(first.event, CustomerDebited) and isinstance(second.event, CustomerDebited)
    reused = msgspec.structs.replace(second.event, receipt=first.event.receipt)
    events[events.index(second)] = _with_event(second, reused)
    found = [d for d in fold(events).discrepancies if d.code == Code.RECEIPT_REUSED]
    assert len(found) == 1
    assert found[0].receipt_hash == first.event.receipt.receipt_hash
    assert [r.seq for r in found[0].events] == [first.seq, second.seq]


def test_a_release_that_returns_more_than_was_held_is_named() -> None:
    events = ledger()
    released = [
        i
        for i, d in enumerate(events)
        if isinstance(d.event, ReservationReleased) and d.event.outcome == "released"
    ]
    i = released[0]
    e = events[i].event
    assert isinstance(e, ReservationReleased)
    events[i] = _with_event(
        events[i], msgspec.structs.replace(e, amount_wei=str(int(e.amount_wei) + 5))
    )
    codes = [d.code for d in fold(events).discrepancies]
    assert Code.RELEASE_AMOUNT in codes and Code.RESERVED_CHAIN in codes


def test_a_payout_without_its_debit_is_named() -> None:
    events = ledger()
    i = next(i for i, d in enumerate(events) if isinstance(d.event, CustomerDebited))
    del events[i]
    codes = [d.code for d in fold(events).discrepancies]
    assert Code.PAYOUT_WITHOUT_RECEIPT in codes


def rows(n: int) -> list[PayoutRow]:
    return [
        PayoutRow(payout_id=f"p{i}", node_id="n", receipt_hash=f"{i:064x}", amount_wei=str(i))
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_every_batched_row_has_an_offline_proof(n: int) -> None:
    preview, created = propose("b1", rows(n), 10, "t", create=True)
    assert isinstance(created, type(created)) and preview.merkle_root == created.merkle_root  # type: ignore[attr-defined]
    batched = created.rows  # type: ignore[attr-defined]
    for row in batched:
        proof = prove_row("b1", batched, row.payout_id)
        assert proof.merkle_root == created.merkle_root  # type: ignore[attr-defined]
        assert check_payout_proof(proof) == []
    forged = msgspec.structs.replace(
        proof, row=msgspec.structs.replace(proof.row, amount_wei="1000000")
    )
    assert check_payout_proof(forged) != []
