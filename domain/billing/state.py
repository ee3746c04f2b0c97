"""A customer's account as the log carries it: amounts as strings, everything a decision
needs (balance, holds, spend windows, keys, open and recently finished reservations)."""

from datetime import datetime

import msgspec

from domain.billing.spend import SpendBucket

DEFAULT_WINDOW_S = 24 * 3600
QUEUED, CLAIMED, AWAITING_RECEIPT = "queued", "claimed", "awaiting_receipt"
SETTLED, RELEASED = "settled", "released"
OPEN_STATES = (QUEUED, CLAIMED, AWAITING_RECEIPT)
RESERVATION_STATES = (*OPEN_STATES, SETTLED, RELEASED)
INFERENCE, BILLING_READ = "inference", "billing:read"
SCOPES = (INFERENCE, BILLING_READ)


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """What may be bought. A customer has one and each key has one; both must allow."""

    allowed_models: tuple[str, ...] | None = None
    """None: every model."""
    allowed_route_tiers: tuple[str, ...] | None = None
    """None: every paid tier."""
    max_price_wei: str | None = None
    """The most one request may be quoted."""
    spend_cap_wei: str | None = None
    """The most that may be spent (and held) within the rolling window."""
    spend_window_s: int = DEFAULT_WINDOW_S


class KeyAccount(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    name: str
    scopes: tuple[str, ...]
    policy: Policy
    expires_at: datetime | None = None
    revoked: bool = False
    reserved_wei: str = "0"
    spend: tuple[SpendBucket, ...] = ()


class OpenReservation(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    key_id: str
    job_id: str
    state: str
    model: str
    profile_id: str | None
    route_tier: str
    prompt_price_wei: str
    completion_price_wei: str
    amount_wei: str
    created_at: datetime
    updated_at: datetime
    node_id: str | None = None
    idempotent: bool = False


class FinishedReservation(msgspec.Struct, frozen=True, kw_only=True):
    """A reservation's outcome, kept a while so that a retry gets the same answer."""

    reservation_id: str
    job_id: str
    state: str
    debited_wei: str
    released_wei: str
    receipt_hash: str | None = None
    node_id: str | None = None
    reason: str = ""


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    name: str
    policy: Policy
    created_at: datetime
    balance_wei: str = "0"
    reserved_wei: str = "0"
    spend: tuple[SpendBucket, ...] = ()
    keys: dict[str, KeyAccount] = {}
    open: dict[str, OpenReservation] = {}
    finished: tuple[FinishedReservation, ...] = ()
    """Idempotent reservations' outcomes, most recent last; bounded (older outcomes are
    in the read models)."""
