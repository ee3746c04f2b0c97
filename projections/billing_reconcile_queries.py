"""The billing read models as reconciliation reads them: whole tables, amounts as ints."""

from datetime import datetime

from domain.billing.read_model_check import (
    CustomerCount,
    CustomerRow,
    PayoutRowModel,
    ReservationRow,
)
from projections.db import Database


async def projected_seq(db: Database) -> int:
    """How far the billing read models have folded the ledger."""
    seq = await db.fetchval(
        "SELECT last_seq FROM projection_checkpoints WHERE projection = 'billing'"
    )
    return int(seq or 0)


async def customers(db: Database) -> list[CustomerRow]:
    rows = await db.fetch(
        "SELECT customer_id, balance_wei, reserved_wei, last_seq FROM billing_customers"
    )
    return [CustomerRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


async def entry_counts(db: Database) -> list[CustomerCount]:
    rows = await db.fetch("SELECT customer_id, count(*) FROM billing_entries GROUP BY 1")
    return [CustomerCount(r[0], int(r[1])) for r in rows]


async def debits_since(
    db: Database, windows: dict[int, list[str]], now: datetime
) -> list[CustomerCount]:
    """Each customer's debits after ``now`` less its rolling window (grouped by window)."""
    found: list[CustomerCount] = []
    for window_s, ids in windows.items():
        rows = await db.fetch(
            "SELECT customer_id, sum(amount_wei) FROM billing_entries WHERE kind = 'debit'"
            " AND customer_id = ANY($1::text[])"
            " AND created_at > $2::timestamptz - make_interval(secs => $3) GROUP BY 1",
            ids,
            now,
            float(window_s),
        )
        found.extend(CustomerCount(r[0], int(r[1])) for r in rows)
    return found


async def reservations(db: Database) -> list[ReservationRow]:
    rows = await db.fetch(
        "SELECT reservation_id, customer_id, state, amount_wei, debited_wei, released_wei,"
        " receipt_hash FROM billing_reservations"
    )
    return [
        ReservationRow(r[0], r[1], r[2], _int(r[3]), _int(r[4]), _int(r[5]), r[6]) for r in rows
    ]


async def payouts(db: Database) -> list[PayoutRowModel]:
    rows = await db.fetch(
        "SELECT payout_id, node_id, reservation_id, receipt_hash, amount_wei, fee_wei, batch_id"
        " FROM node_payouts"
    )
    return [PayoutRowModel(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), r[6]) for r in rows]


async def receipt_hashes(db: Database) -> list[str]:
    return [r[0] for r in await db.fetch("SELECT receipt_hash FROM receipts_accepted")]


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
