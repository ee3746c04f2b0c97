"""Billing read models from the customers' subjects and the price book: accounts, entries,
reservations, gateway keys (public fields), prices, node payouts and accepted receipts."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from domain.decoding import Decoded
from domain.events import (
    CreditAdjusted,
    CreditGranted,
    CustomerCreated,
    CustomerDebited,
    CustomerEvent,
    CustomerPolicySet,
    GatewayKeyIssued,
    GatewayKeyPolicySet,
    GatewayKeyRevoked,
    ModelPriceSet,
    NodePayoutCreated,
    ReservationAwaitingReceipt,
    ReservationClaimed,
    ReservationCreated,
    ReservationReleased,
)
from projections.db import Database

_json = msgspec.json.Encoder()
ENTRY_KINDS = {
    CreditGranted: "credit",
    CreditAdjusted: "adjustment",
    ReservationCreated: "reserve",
    CustomerDebited: "debit",
    ReservationReleased: "release",
}


def _upsert(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """Insert, or update each column the row names (a None keeps what is there)."""
    names = (*key, *columns)
    return (
        f"INSERT INTO {table} AS t ({', '.join(names)}) VALUES"
        f" ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = coalesce(EXCLUDED.{c}, t.{c})" for c in columns)
    )


_CUSTOMER = (
    "name",
    "policy",
    "balance_wei",
    "reserved_wei",
    "created_at",
    "updated_at",
    "last_seq",
)
_RESERVATION = (
    "customer_id",
    "key_id",
    "job_id",
    "state",
    "model",
    "profile_id",
    "route_tier",
    "amount_wei",
    "debited_wei",
    "released_wei",
    "node_id",
    "receipt_hash",
    "reason",
    "created_at",
    "updated_at",
)
_KEY = ("customer_id", "name", "scopes", "policy", "expires_at", "created_at", "revoked_at")
_KEY_ALL = (*_KEY, "updated_at")
_ENTRY = (
    "entry_id",
    "customer_id",
    "kind",
    "amount_wei",
    "balance_after_wei",
    "reserved_after_wei",
    "receipt_hash",
    "job_id",
    "reservation_id",
    "created_at",
    "seq",
)
_PAYOUT = (
    "payout_id",
    "node_id",
    "reservation_id",
    "receipt_hash",
    "amount_wei",
    "fee_wei",
    "state",
    "created_at",
)
_RECEIPT = (
    "receipt_hash",
    "node_id",
    "model",
    "runtime_kind",
    "finish_reason",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "queue_us",
    "ttft_us",
    "latency_us",
    "created_at",
    "accepted_at",
)


def _insert(table: str, columns: tuple[str, ...], key: str) -> str:
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
        f" ON CONFLICT ({key}) DO NOTHING"
    )


class _Batch:
    def __init__(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.reservations: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.prices: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.entries: list[tuple[Any, ...]] = []
        self.payouts: list[tuple[Any, ...]] = []
        self.receipts: list[tuple[Any, ...]] = []

    def customer(self, p: Decoded, e: CustomerEvent) -> None:
        row = self.customers.setdefault(e.customer_id, {})
        row.update(
            balance_wei=int(e.balance_after_wei),
            reserved_wei=int(e.reserved_after_wei),
            updated_at=p.body.occurred_at,
            last_seq=p.seq,
        )
        if isinstance(e, CustomerCreated):
            row.update(name=e.name, created_at=p.body.occurred_at)
        if isinstance(e, CustomerCreated | CustomerPolicySet):
            row["policy"] = _json.encode(e.policy).decode()
        kind = ENTRY_KINDS.get(type(e))
        if kind is not None:
            self.entry(p, e, kind)

    def entry(self, p: Decoded, e: CustomerEvent, kind: str) -> None:
        receipt_hash = e.receipt.receipt_hash if isinstance(e, CustomerDebited) else None
        self.entries.append(
            (
                p.body.event_id,
                e.customer_id,
                kind,
                int(getattr(e, "amount_wei")),  # noqa: B009 - every entry kind names one
                int(e.balance_after_wei),
                int(e.reserved_after_wei),
                receipt_hash,
                getattr(e, "job_id", None),
                getattr(e, "reservation_id", None),
                p.body.occurred_at,
                p.seq,
            )
        )

    def reservation(self, p: Decoded, e: CustomerEvent) -> None:
        rid = getattr(e, "reservation_id", None)
        if rid is None or isinstance(e, NodePayoutCreated):
            return
        row = self.reservations.setdefault(rid, {"customer_id": e.customer_id})
        row["updated_at"] = p.body.occurred_at
        if isinstance(e, ReservationCreated):
            row.update(
                key_id=e.key_id,
                job_id=e.job_id,
                state="queued",
                model=e.model,
                profile_id=e.profile_id,
                route_tier=e.route_tier,
                amount_wei=int(e.amount_wei),
                created_at=p.body.occurred_at,
            )
        elif isinstance(e, ReservationClaimed):
            row.update(state="claimed", node_id=e.node_id)
        elif isinstance(e, ReservationAwaitingReceipt):
            row.update(state="awaiting_receipt", node_id=e.node_id)
        elif isinstance(e, CustomerDebited):
            # Settled from here on: the release of the rest is in the same atomic append.
            row.update(
                state="settled",
                debited_wei=int(e.amount_wei),
                receipt_hash=e.receipt.receipt_hash,
                node_id=e.receipt.body.node_id,
            )
        elif isinstance(e, ReservationReleased):
            row.update(state=e.outcome, released_wei=int(e.amount_wei), reason=e.reason)
            if e.outcome == "released":
                row["debited_wei"] = 0

    def key(self, p: Decoded, e: CustomerEvent) -> None:
        if not isinstance(e, GatewayKeyIssued | GatewayKeyPolicySet | GatewayKeyRevoked):
            return
        row = self.keys.setdefault(e.key_id, {"customer_id": e.customer_id})
        row["updated_at"] = p.body.occurred_at
        if isinstance(e, GatewayKeyIssued):
            row.update(
                name=e.name,
                scopes=_json.encode(e.scopes).decode(),
                policy=_json.encode(e.policy).decode(),
                expires_at=e.expires_at,
                created_at=p.body.occurred_at,
            )
        elif isinstance(e, GatewayKeyPolicySet):
            row["policy"] = _json.encode(e.policy).decode()
        else:
            row["revoked_at"] = p.body.occurred_at

    def money(self, p: Decoded, e: CustomerEvent) -> None:
        if isinstance(e, NodePayoutCreated):
            self.payouts.append(
                (
                    e.payout_id,
                    e.node_id,
                    e.reservation_id,
                    e.receipt_hash,
                    int(e.amount_wei),
                    int(e.fee_wei),
                    "pending",
                    p.body.occurred_at,
                )
            )
        elif isinstance(e, CustomerDebited):
            r = e.receipt.body
            self.receipts.append(
                (
                    e.receipt.receipt_hash,
                    r.node_id,
                    r.model,
                    r.runtime_kind,
                    r.finish_reason,
                    r.stream,
                    r.usage.prompt_tokens,
                    r.usage.completion_tokens,
                    r.usage.total_tokens,
                    r.timings.queue_us,
                    r.timings.ttft_us,
                    r.timings.latency_us,
                    _from_ms(r.created_at_ms),
                    p.body.occurred_at,
                )
            )

    def price(self, p: Decoded, e: ModelPriceSet) -> None:
        self.prices[(e.model, e.profile_id or "")] = (
            e.model,
            e.profile_id or "",
            int(e.prompt_price_wei),
            int(e.completion_price_wei),
            p.body.occurred_at,
        )


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class BillingProjection:
    name = "billing"
    stream = "ledger"
    tables = (
        "billing_customers",
        "billing_entries",
        "billing_reservations",
        "gateway_keys",
        "model_prices",
        "node_payouts",
        "receipts_accepted",
    )

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        b = _Batch()
        for p in batch:
            e = p.event
            if isinstance(e, CustomerEvent):
                b.customer(p, e)
                b.reservation(p, e)
                b.key(p, e)
                b.money(p, e)
            elif isinstance(e, ModelPriceSet):
                b.price(p, e)
        await _write(db, b)


async def _write(db: Database, b: _Batch) -> None:
    if b.customers:
        await db.executemany(
            _upsert("billing_customers", ("customer_id",), _CUSTOMER),
            [(cid, *(row.get(c) for c in _CUSTOMER)) for cid, row in b.customers.items()],
        )
    if b.entries:
        await db.executemany(_insert("billing_entries", _ENTRY, "entry_id"), b.entries)
    if b.reservations:
        await db.executemany(
            _upsert("billing_reservations", ("reservation_id",), _RESERVATION),
            [(rid, *(row.get(c) for c in _RESERVATION)) for rid, row in b.reservations.items()],
        )
    if b.keys:
        await db.executemany(
            _upsert("gateway_keys", ("key_id",), _KEY_ALL),
            [(kid, *(row.get(c) for c in _KEY_ALL)) for kid, row in b.keys.items()],
        )
    if b.prices:
        await db.executemany(
            "INSERT INTO model_prices (model, profile_id, prompt_price_wei, completion_price_wei,"
            " updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model, profile_id) DO UPDATE"
            " SET prompt_price_wei = EXCLUDED.prompt_price_wei,"
            " completion_price_wei = EXCLUDED.completion_price_wei,"
            " updated_at = EXCLUDED.updated_at",
            list(b.prices.values()),
        )
    if b.payouts:
        await db.executemany(_insert("node_payouts", _PAYOUT, "payout_id"), b.payouts)
    if b.receipts:
        await db.executemany(_insert("receipts_accepted", _RECEIPT, "receipt_hash"), b.receipts)
