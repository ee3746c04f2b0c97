"""What the ledger fold reads of each event, decoded together with its envelope (pure).

A reconciliation folds every ledger message. Decoding the envelope, then each payload in
full in a second pass, was a third of its time; these views keep only the fields the
fold checks (under the events' own names) and are decoded in the envelope's pass, picked
by its ``type``. Every other event's payload stays raw.

Views hold strings and numbers only, so the garbage collector need not track them: a fold
keeps hundreds of thousands of objects alive, and collections triggered by tracked
allocations walked them all.
"""

import functools
import operator
from datetime import datetime
from typing import ClassVar, cast

import msgspec

from domain.billing.lean_events import AccountTotals
from domain.billing.state import DEFAULT_WINDOW_S
from domain.events import EVENT_TYPES, Event
from domain.events.billing import CUSTOMER_EVENTS
from domain.receipts import Usage


class CustomerView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Any customer event: whose, and the totals after it."""

    customer_id: str
    balance_after_wei: str
    reserved_after_wei: str
    account: AccountTotals | None = None
    """The snapshot on an append's last event; its totals only."""


class WindowPolicy(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    spend_window_s: int = DEFAULT_WINDOW_S


class Opened(CustomerView, frozen=True, kw_only=True):
    """CustomerCreated, CustomerPolicySet."""

    policy: WindowPolicy


class Credited(CustomerView, frozen=True, kw_only=True):
    """CreditGranted, CreditAdjusted."""

    amount_wei: str


class Reserved(CustomerView, frozen=True, kw_only=True):
    reservation_id: str
    amount_wei: str
    prompt_price_wei: str
    completion_price_wei: str


class Assigned(CustomerView, frozen=True, kw_only=True):
    """ReservationClaimed, ReservationAwaitingReceipt."""

    reservation_id: str
    node_id: str


class ReceiptBodyView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    node_id: str
    usage: Usage


class ReceiptView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    receipt_hash: str
    body: ReceiptBodyView


class Debited(CustomerView, frozen=True, kw_only=True):
    reservation_id: str
    amount_wei: str
    receipt: ReceiptView


class PaidOut(CustomerView, frozen=True, kw_only=True):
    payout_id: str
    node_id: str
    reservation_id: str
    receipt_hash: str
    amount_wei: str
    fee_wei: str


class Released(CustomerView, frozen=True, kw_only=True):
    reservation_id: str
    amount_wei: str
    outcome: str


_SPECIFIC: dict[str, type[CustomerView]] = {
    "CustomerCreated": Opened,
    "CustomerPolicySet": Opened,
    "CreditGranted": Credited,
    "CreditAdjusted": Credited,
    "ReservationCreated": Reserved,
    "ReservationClaimed": Assigned,
    "ReservationAwaitingReceipt": Assigned,
    "CustomerDebited": Debited,
    "NodePayoutCreated": PaidOut,
    "ReservationReleased": Released,
}
VIEWS: dict[str, type[CustomerView]] = {
    cls.__name__: _SPECIFIC.get(cls.__name__, CustomerView) for cls in CUSTOMER_EVENTS
}
"""The view of each customer event type (key events: whose and the totals only)."""


class Body(msgspec.Struct, frozen=True, tag_field="type", gc=False):
    """An envelope's body as the fold reads it: a view for customer events, raw otherwise."""

    event_id: str
    schema_version: int
    occurred_at: datetime
    payload: CustomerView | msgspec.Raw
    type_name: ClassVar[str]


def _body(name: str) -> type[Body]:
    payload = VIEWS.get(name, msgspec.Raw)
    body = msgspec.defstruct(
        f"{name}Body",
        [("payload", payload)],
        bases=(Body,),
        tag=name,
        frozen=True,
        namespace={"type_name": name},
    )
    return cast(type[Body], body)


_ANY_BODY = functools.reduce(operator.or_, (_body(name) for name in EVENT_TYPES))
_envelope = msgspec.json.Decoder(
    msgspec.defstruct("FoldEnvelope", [("body", _ANY_BODY)], frozen=True)
)


def decode_body(data: bytes) -> Body:
    """The body of a stored envelope; raises msgspec's errors for a type it does not know
    or a payload that is not its type's."""
    return cast(Body, _envelope.decode(data).body)  # type: ignore[attr-defined]


@functools.cache
def _view_decoder(name: str) -> msgspec.json.Decoder[CustomerView]:
    return msgspec.json.Decoder(VIEWS[name])


def view_of(event: Event) -> CustomerView:
    """The view of a whole customer event (for folds fed decoded events)."""
    name = type(event).__name__
    return _view_decoder(name).decode(msgspec.json.encode(event))
