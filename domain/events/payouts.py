"""Payout batches and their settlement, each transition an event on ``payout_batch.<id>``,
and the local settlement anchor on ``settlement_anchor.<id>``.

A batch's rows are its Merkle leaves: RFC 6962 over the canonical bytes of each
``PayoutRow``, so any one payout is provable against ``merkle_root`` alone.
"""

import msgspec

from domain.events.base import Event


class PayoutRow(msgspec.Struct, frozen=True, kw_only=True):
    """One pending payout as batched: public-safe (no customer id)."""

    payout_id: str
    node_id: str
    receipt_hash: str
    amount_wei: str


class PayoutBatchEvent(Event, frozen=True, kw_only=True):
    batch_id: str
    merkle_root: str
    """Hex RFC 6962 root over the rows' canonical bytes."""


class PayoutBatchPreviewed(PayoutBatchEvent, frozen=True, kw_only=True):
    """A proposed batch: it claims nothing, another batch may still take its payouts."""

    payout_count: int
    total_amount_wei: str
    rows: tuple[PayoutRow, ...]
    up_to_seq: int
    """The ledger sequence the pending payouts were read up to."""
    by: str


class PayoutBatchCreated(PayoutBatchEvent, frozen=True, kw_only=True):
    """The batch claims its rows: appended only if the ledger did not move since they were
    read, so no payout can be in two created batches."""

    payout_count: int
    total_amount_wei: str
    rows: tuple[PayoutRow, ...]
    up_to_seq: int
    by: str


class PayoutBatchSubmitted(PayoutBatchEvent, frozen=True, kw_only=True):
    target: str
    """The settlement adapter (``local-anchor`` is the only one shipped)."""
    reference: str
    """Where the target recorded it (for the local anchor: the anchor's event id)."""
    by: str


class PayoutBatchFinalized(PayoutBatchEvent, frozen=True, kw_only=True):
    target: str
    reference: str
    by: str


class SettlementAnchored(Event, frozen=True, kw_only=True):
    """A batch root recorded in the control plane's own signed log: a local anchor, not a
    chain transaction. ``stage`` is ``submitted`` or ``finalized``."""

    batch_id: str
    merkle_root: str
    payout_count: int
    total_amount_wei: str
    stage: str
    anchor: str = "local"


PAYOUT_EVENTS = (
    PayoutBatchPreviewed,
    PayoutBatchCreated,
    PayoutBatchSubmitted,
    PayoutBatchFinalized,
    SettlementAnchored,
)
