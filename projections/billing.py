"""Billing read models from the customers' subjects and the price book: accounts, entries,
reservations, gateway keys (public fields), prices, node payouts and accepted receipts; and
payout batches from ``payout_batch.<id>`` (here, so that a payout's ``batch_id`` and its
batch move in the same transaction and under the same checkpoint as the payout itself)."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from domain.billing.lean_events import decode_lean
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
    PayoutBatchCreated,
    PayoutBatchEvent,
    PayoutBatchFinalized,
    PayoutBatchPreviewed,
    PayoutBatchSubmitted,
    ReservationAwaitingReceipt,
    ReservationClaimed,
    ReservationCreated,
    ReservationReleased,
)
from domain.payout_batches import STATE_AFTER
from projections.db import Database

_json = msgspec.json.Encoder()
ENTRY_KINDS = {
    cls.__name__: kind
    for cls, kind in (
        (CreditGranted, "credit"),
        (CreditAdjusted, "adjustment"),
        (ReservationCreated, "reserve"),
        (CustomerDebited, "debit"),
        (ReservationReleased, "release"),
    )
}
"""By event type name: the events decoded here are lean subclasses of these."""
# Tuples, not ``A | B``, which builds a union object on every call of a per-event check.
_POLICY_EVENTS = (CustomerCreated, CustomerPolicySet)
_KEY_EVENTS = (GatewayKeyIssued, GatewayKeyPolicySet, GatewayKeyRevoked)


def _params(columns: tuple[str, ...]) -> str:
    """Amounts go as the decimal strings the events carry, cast by PostgreSQL: asyncpg's
    binary numeric encoding took twice the client CPU of the rest of a row."""
    return ", ".join(
        f"${i}::text::numeric" if c.endswith("_wei") else f"${i}" for i, c in enumerate(columns, 1)
    )


def _upsert(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """Insert, or update each column the row names (a None keeps what is there)."""
    names = (*key, *columns)
    return (
        f"INSERT INTO {table} AS t ({', '.join(names)}) VALUES ({_params(names)})"
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
_BATCH = (
    "state",
    "payout_count",
    "total_amount_wei",
    "merkle_root",
    "up_to_seq",
    "target",
    "reference",
    "confirmation",
    "created_by",
    "created_at",
    "submitted_at",
    "finalized_at",
    "updated_at",
    "last_event_id",
    "last_seq",
)
PAYOUT_STATE = {
    PayoutBatchCreated: "batched",
    PayoutBatchSubmitted: "submitted",
    PayoutBatchFinalized: "finalized",
}
"""node_payouts.state once a batch claims the payout (``pending`` before)."""
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
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_params(columns)})"
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
        self.batches: dict[str, dict[str, Any]] = {}
        self.payout_moves: list[tuple[str, str, Any]] = []
        """(what, batch id, …) in log order: claims of payouts, then their state."""

    def customer(self, p: Decoded, e: CustomerEvent) -> None:
        row = self.customers.setdefault(e.customer_id, {})
        row.update(
            balance_wei=e.balance_after_wei,
            reserved_wei=e.reserved_after_wei,
            updated_at=p.body.occurred_at,
            last_seq=p.seq,
        )
        if isinstance(e, CustomerCreated):
            row.update(name=e.name, created_at=p.body.occurred_at)
        if isinstance(e, _POLICY_EVENTS):
            row["policy"] = _json.encode(e.policy).decode()
        kind = ENTRY_KINDS.get(p.body.type)
        if kind is not None:
            self.entry(p, e, kind)

    def entry(self, p: Decoded, e: CustomerEvent, kind: str) -> None:
        receipt_hash = e.receipt.receipt_hash if isinstance(e, CustomerDebited) else None
        self.entries.append(
            (
                p.body.event_id,
                e.customer_id,
                kind,
                getattr(e, "amount_wei"),  # noqa: B009 - every entry kind names one
                e.balance_after_wei,
                e.reserved_after_wei,
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
                amount_wei=e.amount_wei,
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
                debited_wei=e.amount_wei,
                receipt_hash=e.receipt.receipt_hash,
                node_id=e.receipt.body.node_id,
            )
        elif isinstance(e, ReservationReleased):
            row.update(state=e.outcome, released_wei=e.amount_wei, reason=e.reason)
            if e.outcome == "released":
                row["debited_wei"] = "0"

    def key(self, p: Decoded, e: CustomerEvent) -> None:
        if not isinstance(e, _KEY_EVENTS):
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
                    e.amount_wei,
                    e.fee_wei,
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

    def batch(self, p: Decoded, e: PayoutBatchEvent) -> None:
        row = self.batches.setdefault(e.batch_id, {})
        at = p.body.occurred_at
        row.update(
            state=STATE_AFTER[type(e)],
            merkle_root=e.merkle_root,
            updated_at=at,
            last_event_id=p.body.event_id,
            last_seq=p.seq,
        )
        if isinstance(e, PayoutBatchPreviewed | PayoutBatchCreated):
            row.update(
                payout_count=e.payout_count,
                total_amount_wei=e.total_amount_wei,
                up_to_seq=e.up_to_seq,
                created_by=e.by,
                created_at=at,
            )
        if isinstance(e, PayoutBatchCreated):
            ids = [r.payout_id for r in e.rows]
            self.payout_moves.append(("claim", e.batch_id, ids))
        elif isinstance(e, PayoutBatchSubmitted):
            row.update(target=e.target, reference=e.reference, submitted_at=at)
        elif isinstance(e, PayoutBatchFinalized):
            row.update(target=e.target, confirmation=e.reference, finalized_at=at)
        state = PAYOUT_STATE.get(type(e))
        if state is not None and not isinstance(e, PayoutBatchCreated):
            self.payout_moves.append(("state", e.batch_id, state))

    def price(self, p: Decoded, e: ModelPriceSet) -> None:
        self.prices[(e.model, e.profile_id or "")] = (
            e.model,
            e.profile_id or "",
            e.prompt_price_wei,
            e.completion_price_wei,
            p.body.occurred_at,
        )


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class BillingProjection:
    name = "billing"
    stream = "ledger"
    handles = (CustomerEvent, ModelPriceSet, PayoutBatchEvent)
    tables = (
        "billing_customers",
        "billing_entries",
        "billing_reservations",
        "gateway_keys",
        "model_prices",
        "node_payouts",
        "receipts_accepted",
        "payout_batches",
    )

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        b = _Batch()
        for p in batch:
            # Lean: a customer event's account snapshot is most of its bytes, and no row
            # here needs more of it than the totals the event carries anyway.
            e = decode_lean(p.body.type, p.body.schema_version, p.body.payload)
            if isinstance(e, CustomerEvent):
                b.customer(p, e)
                b.reservation(p, e)
                b.key(p, e)
                b.money(p, e)
            elif isinstance(e, ModelPriceSet):
                b.price(p, e)
            elif isinstance(e, PayoutBatchEvent):
                b.batch(p, e)
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
            " updated_at) VALUES ($1, $2, $3::text::numeric, $4::text::numeric, $5)"
            " ON CONFLICT (model, profile_id) DO UPDATE"
            " SET prompt_price_wei = EXCLUDED.prompt_price_wei,"
            " completion_price_wei = EXCLUDED.completion_price_wei,"
            " updated_at = EXCLUDED.updated_at",
            list(b.prices.values()),
        )
    if b.payouts:
        await db.executemany(_insert("node_payouts", _PAYOUT, "payout_id"), b.payouts)
    if b.receipts:
        await db.executemany(_insert("receipts_accepted", _RECEIPT, "receipt_hash"), b.receipts)
    if b.batches:
        await db.executemany(
            _upsert("payout_batches", ("batch_id",), _BATCH),
            [(bid, *(row.get(c) for c in _BATCH)) for bid, row in b.batches.items()],
        )
    for what, batch_id, arg in b.payout_moves:  # after the payouts they claim are written
        if what == "claim":
            await db.execute(
                "UPDATE node_payouts SET batch_id = $1, state = 'batched'"
                " WHERE payout_id = ANY($2::text[]) AND batch_id IS NULL",
                batch_id,
                arg,
            )
        else:
            await db.execute(
                "UPDATE node_payouts SET state = $2 WHERE batch_id = $1", batch_id, arg
            )
