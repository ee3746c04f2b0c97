"""The money path on a customer's ledger subject, and the price book on its own.

Every customer event carries ``balance_after_wei`` and ``reserved_after_wei``; the last
event of every append also carries the whole account (``account``), so a decision needs
only the subject's last event while a batch of many stays small. Amounts are decimal
strings. Never a key's secret or hash, never a prompt or an output.
"""

from datetime import datetime

import msgspec

from domain.billing.state import AccountState, Policy
from domain.events.base import Event
from domain.receipts import Receipt


class CustomerEvent(Event, frozen=True, kw_only=True):
    customer_id: str
    balance_after_wei: str
    reserved_after_wei: str
    account: AccountState | None = None


class CustomerCreated(CustomerEvent, frozen=True, kw_only=True):
    name: str
    policy: Policy
    created_by: str


class CustomerPolicySet(CustomerEvent, frozen=True, kw_only=True):
    policy: Policy
    set_by: str
    reason: str


class CreditGranted(CustomerEvent, frozen=True, kw_only=True):
    amount_wei: str
    reason: str
    granted_by: str


class CreditAdjusted(CustomerEvent, frozen=True, kw_only=True):
    amount_wei: str
    """Signed: a negative adjustment takes credit away."""
    reason: str
    adjusted_by: str


class GatewayKeyIssued(CustomerEvent, frozen=True, kw_only=True):
    key_id: str
    name: str
    scopes: tuple[str, ...]
    policy: Policy
    expires_at: datetime | None
    issued_by: str


class GatewayKeyPolicySet(CustomerEvent, frozen=True, kw_only=True):
    key_id: str
    policy: Policy
    set_by: str
    reason: str


class GatewayKeyRevoked(CustomerEvent, frozen=True, kw_only=True):
    key_id: str
    revoked_by: str
    reason: str


class ReservationCreated(CustomerEvent, frozen=True, kw_only=True):
    reservation_id: str
    key_id: str
    job_id: str
    model: str
    profile_id: str | None
    route_tier: str
    prompt_tokens: int
    max_tokens: int
    prompt_price_wei: str
    completion_price_wei: str
    amount_wei: str
    idempotent: bool = False
    """Made with an Idempotency-Key: a retry by the same key gets this outcome."""


class ReservationClaimed(CustomerEvent, frozen=True, kw_only=True):
    reservation_id: str
    job_id: str
    node_id: str


class ReservationAwaitingReceipt(CustomerEvent, frozen=True, kw_only=True):
    reservation_id: str
    job_id: str
    node_id: str


class CustomerDebited(CustomerEvent, frozen=True, kw_only=True):
    reservation_id: str
    job_id: str
    key_id: str
    amount_wei: str
    """Usage at the reserved prices, never more than was reserved."""
    receipt: Receipt
    """The node's signed receipt, verbatim (usage and digests, never content)."""


class NodePayoutCreated(CustomerEvent, frozen=True, kw_only=True):
    payout_id: str
    node_id: str
    reservation_id: str
    receipt_hash: str
    amount_wei: str
    """What the node is owed: the debit less the protocol fee."""
    fee_wei: str
    fee_bps: int


class ReservationReleased(CustomerEvent, frozen=True, kw_only=True):
    reservation_id: str
    job_id: str
    key_id: str
    amount_wei: str
    """What went back to available: all of the hold, or what a settlement left of it."""
    outcome: str
    """settled (after a debit) or released (no debit)."""
    reason: str


class PriceEntry(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    profile_id: str | None = None
    prompt_price_wei: str
    completion_price_wei: str


class ModelPriceSet(Event, frozen=True, kw_only=True):
    model: str
    profile_id: str | None
    prompt_price_wei: str
    completion_price_wei: str
    set_by: str
    prices: tuple[PriceEntry, ...]
    """The whole price book after this change."""


CUSTOMER_EVENTS = (
    CustomerCreated,
    CustomerPolicySet,
    CreditGranted,
    CreditAdjusted,
    GatewayKeyIssued,
    GatewayKeyPolicySet,
    GatewayKeyRevoked,
    ReservationCreated,
    ReservationClaimed,
    ReservationAwaitingReceipt,
    CustomerDebited,
    NodePayoutCreated,
    ReservationReleased,
)
BILLING_EVENTS = (*CUSTOMER_EVENTS, ModelPriceSet)
