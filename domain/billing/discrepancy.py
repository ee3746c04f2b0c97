"""What reconciliation reports: one discrepancy, naming who and which events (pure data)."""

from enum import StrEnum

import msgspec


class Code(StrEnum):
    UNKNOWN_CUSTOMER = "unknown_customer"
    DUPLICATE_CUSTOMER = "duplicate_customer"
    BALANCE_CHAIN = "balance_after_chain"
    RESERVED_CHAIN = "reserved_after_chain"
    ACCOUNT_SNAPSHOT = "account_snapshot"
    OVERDRAWN = "overdrawn"
    UNKNOWN_RESERVATION = "unknown_reservation"
    DUPLICATE_RESERVATION = "duplicate_reservation"
    AFTER_CLOSE = "event_after_reservation_closed"
    DEBIT_OVER_RESERVED = "debit_over_reserved"
    DEBIT_NOT_USAGE = "debit_not_usage"
    DOUBLE_DEBIT = "reservation_debited_twice"
    RECEIPT_REUSED = "receipt_debited_twice"
    PAYOUT_WITHOUT_RECEIPT = "payout_without_accepted_receipt"
    PAYOUT_AMOUNT = "payout_plus_fee_not_debit"
    DUPLICATE_PAYOUT = "duplicate_payout"
    RELEASE_AMOUNT = "release_amount"
    RELEASE_OUTCOME = "release_outcome"
    UNFINISHED_SETTLEMENT = "unfinished_settlement"
    BATCH_UNKNOWN_PAYOUT = "batch_unknown_payout"
    BATCH_ROW_MISMATCH = "batch_row_mismatch"
    BATCH_ROOT = "batch_root_mismatch"
    BATCHED_TWICE = "payout_in_two_batches"
    BATCH_TRANSITION = "batch_transition"
    READ_MODEL = "read_model_mismatch"
    READ_MODEL_MISSING = "read_model_missing_row"
    READ_MODEL_EXTRA = "read_model_extra_row"


class Ref(msgspec.Struct, frozen=True, gc=False):
    """One event of the ledger: where it sits and what it is."""

    seq: int
    event_id: str
    type: str

    def __str__(self) -> str:
        return f"#{self.seq} {self.type} {self.event_id}"


class Discrepancy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    code: Code
    detail: str
    customer_id: str | None = None
    reservation_id: str | None = None
    receipt_hash: str | None = None
    payout_id: str | None = None
    batch_id: str | None = None
    table: str | None = None
    events: tuple[Ref, ...] = ()

    @property
    def subject(self) -> str:
        """The thing at fault, most specific first."""
        for label, value in (
            ("receipt", self.receipt_hash),
            ("payout", self.payout_id),
            ("batch", self.batch_id),
            ("reservation", self.reservation_id),
            ("customer", self.customer_id),
        ):
            if value:
                return f"{label} {value}"
        return ""

    def __str__(self) -> str:
        events = ", ".join(str(r) for r in self.events)
        return f"{self.code}: {self.detail} [{self.subject}] ({events})"
