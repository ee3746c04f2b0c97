from domain.events.base import Event


class ReconciliationCompleted(Event, frozen=True, kw_only=True):
    """A scheduled reconciliation's summary: the ledger up to ``up_to_seq`` recomputed from
    the log alone and compared with the billing read models."""

    up_to_seq: int
    events: int
    customers: int
    reservations: int
    open_reservations: int
    receipts: int
    payouts: int
    payout_total_wei: str
    discrepancies: int
    by_code: dict[str, int] = {}
