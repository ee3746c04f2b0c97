"""Billing queries over the read models (amounts come back as ints)."""

from datetime import datetime
from typing import Any

import msgspec

from projections.db import Database


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    entry_id: str
    kind: str
    amount_wei: int
    balance_after_wei: int
    reserved_after_wei: int
    receipt_hash: str | None
    job_id: str | None
    reservation_id: str | None
    created_at: datetime


class KindTotal(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    count: int
    amount_wei: int


class ReservationRow(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    customer_id: str
    key_id: str | None
    job_id: str | None
    state: str
    model: str | None
    route_tier: str | None
    amount_wei: int | None
    debited_wei: int | None
    released_wei: int | None
    node_id: str | None
    receipt_hash: str | None
    reason: str | None
    created_at: datetime | None
    updated_at: datetime


class PublicReceipt(msgspec.Struct, frozen=True, kw_only=True):
    receipt_hash: str
    node_id: str
    model: str
    runtime_kind: str
    finish_reason: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    queue_us: int
    ttft_us: int
    latency_us: int
    created_at: datetime
    accepted_at: datetime


class KeyRow(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    customer_id: str
    name: str | None
    scopes: list[str] | None
    policy: dict[str, Any] | None
    expires_at: datetime | None
    created_at: datetime | None
    revoked_at: datetime | None


class Treasury(msgspec.Struct, frozen=True, kw_only=True):
    debits_wei: int
    debit_count: int
    payouts_wei: int
    fees_wei: int
    payout_count: int


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _row(cls: type[Any], row: Any, amounts: tuple[str, ...]) -> Any:
    values = dict(row)
    for name in amounts:
        values[name] = _int(values[name])
    return cls(**values)


_ENTRY = (
    "entry_id, kind, amount_wei, balance_after_wei, reserved_after_wei, receipt_hash, job_id,"
    " reservation_id, created_at"
)
_ENTRY_AMOUNTS = ("amount_wei", "balance_after_wei", "reserved_after_wei")
_RES = (
    "reservation_id, customer_id, key_id, job_id, state, model, route_tier, amount_wei,"
    " debited_wei, released_wei, node_id, receipt_hash, reason, created_at, updated_at"
)
_RES_AMOUNTS = ("amount_wei", "debited_wei", "released_wei")
_json = msgspec.json.Decoder()


async def usage(
    db: Database, customer_id: str, since: datetime, limit: int
) -> tuple[list[KindTotal], list[Entry]]:
    totals = await db.fetch(
        "SELECT kind, count(*) AS count, coalesce(sum(amount_wei), 0) AS amount_wei"
        " FROM billing_entries WHERE customer_id = $1 AND created_at >= $2"
        " GROUP BY kind ORDER BY kind",
        customer_id,
        since,
    )
    rows = await db.fetch(
        f"SELECT {_ENTRY} FROM billing_entries WHERE customer_id = $1 AND created_at >= $2"
        " ORDER BY seq DESC LIMIT $3",
        customer_id,
        since,
        limit,
    )
    return (
        [
            KindTotal(kind=t["kind"], count=t["count"], amount_wei=int(t["amount_wei"]))
            for t in totals
        ],
        [_row(Entry, r, _ENTRY_AMOUNTS) for r in rows],
    )


async def job(
    db: Database, customer_id: str, job_id: str
) -> tuple[list[ReservationRow], list[Entry]]:
    rows = await db.fetch(
        f"SELECT {_RES} FROM billing_reservations WHERE customer_id = $1 AND job_id = $2"
        " ORDER BY created_at",
        customer_id,
        job_id,
    )
    entries = await db.fetch(
        f"SELECT {_ENTRY} FROM billing_entries WHERE customer_id = $1 AND job_id = $2 ORDER BY seq",
        customer_id,
        job_id,
    )
    return [_row(ReservationRow, r, _RES_AMOUNTS) for r in rows], [
        _row(Entry, e, _ENTRY_AMOUNTS) for e in entries
    ]


async def reservation(db: Database, reservation_id: str) -> ReservationRow | None:
    row = await db.fetchrow(
        f"SELECT {_RES} FROM billing_reservations WHERE reservation_id = $1", reservation_id
    )
    return None if row is None else _row(ReservationRow, row, _RES_AMOUNTS)


async def stale_reservations(db: Database, before: datetime, limit: int) -> list[ReservationRow]:
    rows = await db.fetch(
        f"SELECT {_RES} FROM billing_reservations"
        " WHERE state IN ('queued', 'claimed', 'awaiting_receipt') AND updated_at < $1"
        " ORDER BY updated_at LIMIT $2",
        before,
        limit,
    )
    return [_row(ReservationRow, r, _RES_AMOUNTS) for r in rows]


async def public_receipt(db: Database, receipt_hash: str) -> PublicReceipt | None:
    row = await db.fetchrow(
        "SELECT receipt_hash, node_id, model, runtime_kind, finish_reason, stream, prompt_tokens,"
        " completion_tokens, total_tokens, queue_us, ttft_us, latency_us, created_at, accepted_at"
        " FROM receipts_accepted WHERE receipt_hash = $1",
        receipt_hash,
    )
    return None if row is None else PublicReceipt(**dict(row))


async def keys_of(db: Database, customer_id: str) -> list[KeyRow]:
    rows = await db.fetch(
        "SELECT key_id, customer_id, name, scopes, policy, expires_at, created_at, revoked_at"
        " FROM gateway_keys WHERE customer_id = $1 ORDER BY created_at",
        customer_id,
    )
    found = []
    for r in rows:
        values = dict(r)
        for name in ("scopes", "policy"):
            values[name] = None if values[name] is None else _json.decode(values[name])
        found.append(KeyRow(**values))
    return found


async def treasury(db: Database, since: datetime) -> Treasury:
    debits = await db.fetchrow(
        "SELECT coalesce(sum(amount_wei), 0) AS total, count(*) AS count FROM billing_entries"
        " WHERE kind = 'debit' AND created_at >= $1",
        since,
    )
    payouts = await db.fetchrow(
        "SELECT coalesce(sum(amount_wei), 0) AS total, coalesce(sum(fee_wei), 0) AS fees,"
        " count(*) AS count FROM node_payouts WHERE created_at >= $1",
        since,
    )
    return Treasury(
        debits_wei=int(debits["total"]),
        debit_count=debits["count"],
        payouts_wei=int(payouts["total"]),
        fees_wei=int(payouts["fees"]),
        payout_count=payouts["count"],
    )
