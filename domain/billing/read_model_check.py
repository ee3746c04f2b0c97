"""The billing read models held against the books recomputed from the log (pure).

Rows come in as plain tuples (the adapter streams them from Postgres); each mismatch
names the row and the ledger events that should have produced it.
"""

from collections.abc import Callable, Iterable
from typing import NamedTuple

from domain.billing.discrepancy import Code, Discrepancy
from domain.billing.reconcile import LedgerFold


class CustomerRow(NamedTuple):
    customer_id: str
    balance_wei: int
    reserved_wei: int
    last_seq: int


class ReservationRow(NamedTuple):
    reservation_id: str
    customer_id: str
    state: str
    amount_wei: int | None
    debited_wei: int | None
    released_wei: int | None
    receipt_hash: str | None


class PayoutRowModel(NamedTuple):
    payout_id: str
    node_id: str
    reservation_id: str
    receipt_hash: str
    amount_wei: int
    fee_wei: int
    batch_id: str | None


class CustomerCount(NamedTuple):
    customer_id: str
    value: int


def compare_customers(
    fold: LedgerFold,
    rows: Iterable[CustomerRow],
    entries: Iterable[CustomerCount],
    spend: Iterable[CustomerCount],
) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    table = "billing_customers"
    seen: set[str] = set()
    for row in rows:
        seen.add(row.customer_id)
        c = fold.customers.get(row.customer_id)
        if c is None:
            found.append(_extra(table, "no such customer on the log", customer_id=row.customer_id))
            continue
        events = (c.last,) if c.last is not None else ()
        for column, stored, actual in (
            ("balance_wei", row.balance_wei, c.balance),
            ("reserved_wei", row.reserved_wei, c.reserved),
            ("last_seq", row.last_seq, c.last.seq if c.last else 0),
        ):
            if stored != actual:
                found.append(
                    Discrepancy(
                        code=Code.READ_MODEL,
                        detail=f"{column} is {stored}, the log gives {actual}",
                        customer_id=c.customer_id,
                        table=table,
                        events=events,
                    )
                )
    for cid in fold.customers.keys() - seen:
        found.append(_missing(table, fold, customer_id=cid))
    found.extend(_per_customer(fold, "billing_entries", "entries", entries, _entries))
    found.extend(_per_customer(fold, "billing_entries", "debits in the window", spend, _spend))
    return found


def _entries(fold: LedgerFold, cid: str) -> int:
    return fold.customers[cid].entries


def _spend(fold: LedgerFold, cid: str) -> int:
    return fold.window_spend(fold.customers[cid])


def _per_customer(
    fold: LedgerFold,
    table: str,
    what: str,
    counted: Iterable[CustomerCount],
    recompute: Callable[[LedgerFold, str], int],
) -> list[Discrepancy]:
    stored = {c.customer_id: c.value for c in counted}
    found = []
    for cid, c in fold.customers.items():
        actual = recompute(fold, cid)
        if stored.get(cid, 0) != actual:
            found.append(
                Discrepancy(
                    code=Code.READ_MODEL,
                    detail=f"{what}: {stored.get(cid, 0)} in the read model, {actual} on the log",
                    customer_id=cid,
                    table=table,
                    events=(c.last,) if c.last else (),
                )
            )
    return found


def compare_reservations(fold: LedgerFold, rows: Iterable[ReservationRow]) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    table = "billing_reservations"
    seen: set[str] = set()
    for row in rows:
        rid = row.reservation_id
        seen.add(rid)
        r = fold.reservations.get(rid)
        if r is None:
            found.append(_extra(table, "no such reservation on the log", reservation_id=rid))
            continue
        debited = r.debit if r.debit is not None else (0 if r.outcome == "released" else None)
        expected = (r.customer_id, r.state, r.amount, debited, r.released, r.receipt_hash)
        stored = (
            row.customer_id,
            row.state,
            row.amount_wei,
            row.debited_wei,
            row.released_wei,
            row.receipt_hash,
        )
        if expected != stored:
            names = ("customer_id", "state", "amount_wei", "debited_wei", "released_wei")
            diffs = [
                f"{n} is {s}, the log gives {e}"
                for n, s, e in zip((*names, "receipt_hash"), stored, expected, strict=True)
                if s != e
            ]
            found.append(
                Discrepancy(
                    code=Code.READ_MODEL,
                    detail="; ".join(diffs),
                    customer_id=r.customer_id,
                    reservation_id=rid,
                    receipt_hash=r.receipt_hash,
                    table=table,
                    events=r.refs,
                )
            )
    for rid in fold.reservations.keys() - seen:
        r = fold.reservations[rid]
        found.append(
            Discrepancy(
                code=Code.READ_MODEL_MISSING,
                detail="the log has it, the read model does not",
                customer_id=r.customer_id,
                reservation_id=rid,
                table=table,
                events=r.refs,
            )
        )
    return found


def compare_payouts(fold: LedgerFold, rows: Iterable[PayoutRowModel]) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    table = "node_payouts"
    seen: set[str] = set()
    for row in rows:
        pid = row.payout_id
        seen.add(pid)
        p = fold.payouts.get(pid)
        if p is None:
            found.append(_extra(table, "no such payout on the log", payout_id=pid))
            continue
        expected = (p.node_id, p.reservation_id, p.receipt_hash, p.amount, p.fee, p.batch_id)
        if expected != row[1:]:
            found.append(
                Discrepancy(
                    code=Code.READ_MODEL,
                    detail=f"the row is {tuple(row[1:])}, the log gives {expected}",
                    payout_id=pid,
                    reservation_id=p.reservation_id,
                    receipt_hash=p.receipt_hash,
                    batch_id=p.batch_id,
                    table=table,
                    events=(p.ref,),
                )
            )
    for pid in fold.payouts.keys() - seen:
        p = fold.payouts[pid]
        found.append(
            Discrepancy(
                code=Code.READ_MODEL_MISSING,
                detail="the log has it, the read model does not",
                payout_id=pid,
                reservation_id=p.reservation_id,
                table=table,
                events=(p.ref,),
            )
        )
    return found


def compare_receipts(fold: LedgerFold, hashes: Iterable[str]) -> list[Discrepancy]:
    table = "receipts_accepted"
    stored = set(hashes)
    found = [
        _extra(table, "no debit of this receipt on the log", receipt_hash=h)
        for h in stored - fold.receipts.keys()
    ]
    for h in fold.receipts.keys() - stored:
        rid = fold.receipts[h]
        r = fold.reservations.get(rid)
        found.append(
            Discrepancy(
                code=Code.READ_MODEL_MISSING,
                detail="debited on the log, not accepted in the read model",
                receipt_hash=h,
                reservation_id=rid,
                table=table,
                events=(r.debit_ref,) if r is not None and r.debit_ref else (),
            )
        )
    return found


def _extra(  # noqa: PLR0917
    table: str,
    detail: str,
    customer_id: str | None = None,
    reservation_id: str | None = None,
    payout_id: str | None = None,
    receipt_hash: str | None = None,
) -> Discrepancy:
    return Discrepancy(
        code=Code.READ_MODEL_EXTRA,
        detail=detail,
        table=table,
        customer_id=customer_id,
        reservation_id=reservation_id,
        payout_id=payout_id,
        receipt_hash=receipt_hash,
    )


def _missing(table: str, fold: LedgerFold, customer_id: str) -> Discrepancy:
    c = fold.customers[customer_id]
    return Discrepancy(
        code=Code.READ_MODEL_MISSING,
        detail="the log has it, the read model does not",
        customer_id=customer_id,
        table=table,
        events=(c.last,) if c.last else (),
    )
