"""Billing recomputed from the ledger alone, with every cross-check on the way (pure).

``LedgerFold`` takes ledger events in stream order and rebuilds what the read models
claim: each customer's balance, reserved amount and rolling spend, each reservation's
outcome, each node's payouts and the batches that claimed them. On the way it checks
what the money path promises: ``*_after_wei`` chains add up, every reservation ends in
debit + release or release alone, a debit stays within its hold and matches the
receipt's usage, no receipt is debited twice, every payout comes from a debit in the
same append and payout + fee = debit, and no payout is batched twice.
"""

from collections import Counter, deque
from collections.abc import Callable, Iterator
from datetime import datetime

import msgspec

from domain.billing.discrepancy import Code, Discrepancy, Ref
from domain.billing.fold_views import (
    VIEWS,
    Assigned,
    Credited,
    CustomerView,
    Debited,
    Opened,
    PaidOut,
    Released,
    Reserved,
    decode_body,
    view_of,
)
from domain.billing.money import cost_of
from domain.billing.state import DEFAULT_WINDOW_S, RELEASED, SETTLED
from domain.decoding import Decoded
from domain.envelope import StoredEvent, body_of
from domain.events import (
    CreditAdjusted,
    CreditGranted,
    CustomerDebited,
    CustomerEvent,
    PayoutBatchCreated,
    PayoutBatchEvent,
    PayoutBatchPreviewed,
    ReservationCreated,
    ReservationReleased,
    decode_payload,
)
from domain.payout_batches import STATE_AFTER, root_of, transition_refusal

ENTRY_TYPES = frozenset(
    t.__name__
    for t in (
        CreditGranted,
        CreditAdjusted,
        ReservationCreated,
        CustomerDebited,
        ReservationReleased,
    )
)
"""Events that become a row of ``billing_entries``."""
RELEVANT_TYPES = frozenset(
    name
    for name in (
        *(t.__name__ for t in CustomerEvent.__subclasses__()),
        *(t.__name__ for t in STATE_AFTER),
    )
)


class Customer:
    __slots__ = (
        "append_no",
        "balance",
        "chain_broken",
        "customer_id",
        "debits",
        "entries",
        "last",
        "reserved",
        "window_s",
    )

    def __init__(self, customer_id: str, window_s: int) -> None:
        self.customer_id = customer_id
        self.balance = 0
        self.reserved = 0
        self.entries = 0
        self.window_s = window_s
        self.debits: deque[tuple[float, int]] = deque()
        """(when, amount) of each debit still inside the rolling window."""
        self.chain_broken = False
        self.append_no = 0
        """Counts appends: the last event of each carries the account."""
        self.last: Ref | None = None

    def spend_since(self, since_s: float) -> int:
        while self.debits and self.debits[0][0] <= since_s:
            self.debits.popleft()
        return sum(amount for _, amount in self.debits)


class Reservation:
    __slots__ = (
        "amount",
        "completion_price",
        "created",
        "customer_id",
        "debit",
        "debit_append",
        "debit_ref",
        "node_id",
        "outcome",
        "payout_ref",
        "prompt_price",
        "receipt_hash",
        "release_ref",
        "released",
        "state",
    )

    def __init__(self, customer_id: str, e: Reserved, ref: Ref) -> None:
        self.customer_id = customer_id
        self.amount = int(e.amount_wei)
        self.prompt_price = int(e.prompt_price_wei)
        self.completion_price = int(e.completion_price_wei)
        self.created = ref
        self.state = "queued"
        self.node_id: str | None = None
        self.debit: int | None = None
        self.debit_ref: Ref | None = None
        self.debit_append = -1
        self.receipt_hash: str | None = None
        self.payout_ref: Ref | None = None
        self.released: int | None = None
        self.release_ref: Ref | None = None
        self.outcome: str | None = None

    @property
    def refs(self) -> tuple[Ref, ...]:
        found = (self.created, self.debit_ref, self.payout_ref, self.release_ref)
        return tuple(r for r in found if r is not None)


class Payout:
    __slots__ = ("amount", "batch_id", "fee", "node_id", "receipt_hash", "ref", "reservation_id")

    def __init__(self, e: PaidOut, ref: Ref) -> None:
        self.node_id = e.node_id
        self.reservation_id = e.reservation_id
        self.receipt_hash = e.receipt_hash
        self.amount = int(e.amount_wei)
        self.fee = int(e.fee_wei)
        self.ref = ref
        self.batch_id: str | None = None


class Batch:
    __slots__ = ("payout_count", "ref", "root", "state", "total")

    def __init__(self) -> None:
        self.state: str | None = None
        self.root = ""
        self.payout_count = 0
        self.total = 0
        self.ref: Ref | None = None


class LedgerFold:
    """Feed ledger events in order; read the recomputed books and ``discrepancies``."""

    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.reservations: dict[str, Reservation] = {}
        self.receipts: dict[str, str] = {}
        """receipt hash → the reservation it settled."""
        self.payouts: dict[str, Payout] = {}
        self.batches: dict[str, Batch] = {}
        self.discrepancies: list[Discrepancy] = []
        self.events = 0
        self.up_to_seq = 0
        self.last_at: datetime | None = None
        self.by_type: Counter[str] = Counter()
        self._steps: dict[str, Callable[[Customer, Ref, datetime, CustomerView], None]] = {
            "CreditGranted": self._credit,
            "CreditAdjusted": self._credit,
            "CustomerPolicySet": self._policy,
            "ReservationCreated": self._reserve,
            "ReservationClaimed": self._assign,
            "ReservationAwaitingReceipt": self._assign,
            "CustomerDebited": self._debit,
            "NodePayoutCreated": self._payout,
            "ReservationReleased": self._release,
        }
        """What each customer event type does to the books, by type name."""

    # --- input --------------------------------------------------------------------------

    def feed_stored(self, stored: StoredEvent) -> None:
        """One stored ledger message, its body and a customer event's view decoded in one
        pass (see ``fold_views``); payout batch events are decoded whole."""
        try:
            body = decode_body(stored.data)
        except msgspec.ValidationError:
            self._feed_unviewed(stored)
            return
        name, payload = body.type_name, body.payload
        event: object = None
        if isinstance(payload, CustomerView):
            event = payload
        elif name in RELEVANT_TYPES:
            event = decode_payload(name, body.schema_version, payload)
        self._take(stored.seq, body.event_id, name, body.occurred_at, event)

    def _feed_unviewed(self, stored: StoredEvent) -> None:
        """A type this code does not know is counted and passed over, as by every reader of
        the log; a known one whose payload is not its type's fails here, as it decodes."""
        body = body_of(stored.data)
        if body.type in VIEWS:
            decode_payload(body.type, body.schema_version, body.payload)
        self._take(stored.seq, body.event_id, body.type, body.occurred_at, None)

    def feed(self, d: Decoded) -> None:
        """An event already decoded whole (tests feed the fold edited events this way)."""
        name = d.body.type
        event: object = None
        if name in VIEWS:
            event = view_of(d.event)
        elif name in RELEVANT_TYPES:
            event = d.event
        self._take(d.seq, d.body.event_id, name, d.body.occurred_at, event)

    def _take(self, seq: int, event_id: str, name: str, at: datetime, event: object) -> None:
        """One message counted; ``event`` (a customer event's view, a payout batch event,
        None for any other) applied to the books."""
        self.events += 1
        self.up_to_seq = seq
        self.last_at = at
        if event is None:
            return
        ref = Ref(seq, event_id, name)
        self.by_type[name] += 1
        if isinstance(event, CustomerView):
            self._customer_event(ref, at, event)
        elif isinstance(event, PayoutBatchEvent):
            self._batch_event(ref, event)

    def _report(self, code: Code, detail: str, *refs: Ref | None, **who: str | None) -> None:
        events = tuple(r for r in refs if r is not None)
        self.discrepancies.append(Discrepancy(code=code, detail=detail, events=events, **who))

    # --- customers ----------------------------------------------------------------------

    def _customer_event(self, ref: Ref, at: datetime, e: CustomerView) -> None:
        cid = e.customer_id
        c = self.customers.get(cid)
        if ref.type == "CustomerCreated":
            assert isinstance(e, Opened)
            if c is not None:
                self._report(Code.DUPLICATE_CUSTOMER, "created twice", c.last, ref, customer_id=cid)
            c = self.customers[cid] = Customer(cid, e.policy.spend_window_s)
        elif c is None:
            self._report(
                Code.UNKNOWN_CUSTOMER, "event before CustomerCreated", ref, customer_id=cid
            )
            c = self.customers[cid] = Customer(cid, DEFAULT_WINDOW_S)
        step = self._steps.get(ref.type)
        if step is not None:
            step(c, ref, at, e)
        if ref.type in ENTRY_TYPES:
            c.entries += 1
        self._check_totals(c, ref, e)
        c.last = ref
        if e.account is not None:
            c.append_no += 1

    def _credit(self, c: Customer, _ref: Ref, _at: datetime, e: CustomerView) -> None:
        assert isinstance(e, Credited)
        c.balance += int(e.amount_wei)

    def _policy(self, c: Customer, _ref: Ref, _at: datetime, e: CustomerView) -> None:
        assert isinstance(e, Opened)
        c.window_s = e.policy.spend_window_s

    def _check_totals(self, c: Customer, ref: Ref, e: CustomerView) -> None:
        cid = c.customer_id
        if not c.chain_broken and (
            int(e.balance_after_wei) != c.balance or int(e.reserved_after_wei) != c.reserved
        ):
            # One report per customer: every later event would repeat it.
            c.chain_broken = True
            for code, claimed, actual in (
                (Code.BALANCE_CHAIN, e.balance_after_wei, c.balance),
                (Code.RESERVED_CHAIN, e.reserved_after_wei, c.reserved),
            ):
                if int(claimed) != actual:
                    detail = f"the event says {claimed}, its amounts add up to {actual}"
                    self._report(code, detail, c.last, ref, customer_id=cid)
        if c.balance < c.reserved or c.reserved < 0:
            detail = f"balance {c.balance} < reserved {c.reserved}"
            self._report(Code.OVERDRAWN, detail, ref, customer_id=cid)
        account = e.account
        if account is not None and (
            account.balance_wei != e.balance_after_wei
            or account.reserved_wei != e.reserved_after_wei
        ):
            detail = "the account snapshot disagrees with the event's own totals"
            self._report(Code.ACCOUNT_SNAPSHOT, detail, ref, customer_id=cid)

    # --- reservations -------------------------------------------------------------------

    def _open(self, c: Customer, ref: Ref, rid: str) -> Reservation | None:
        r = self.reservations.get(rid)
        cid = c.customer_id
        if r is None:
            self._report(Code.UNKNOWN_RESERVATION, "no ReservationCreated", ref, reservation_id=rid)
            return None
        if r.outcome is not None:
            detail = f"the reservation was already {r.outcome}"
            self._report(
                Code.AFTER_CLOSE, detail, *r.refs, ref, customer_id=cid, reservation_id=rid
            )
            return None
        return r

    def _reserve(self, c: Customer, ref: Ref, _at: datetime, e: CustomerView) -> None:
        assert isinstance(e, Reserved)
        rid = e.reservation_id
        if rid in self.reservations:
            earlier = self.reservations[rid].created
            self._report(
                Code.DUPLICATE_RESERVATION, "created twice", earlier, ref, reservation_id=rid
            )
            return
        self.reservations[rid] = Reservation(c.customer_id, e, ref)
        c.reserved += int(e.amount_wei)

    def _assign(self, c: Customer, ref: Ref, _at: datetime, e: CustomerView) -> None:
        assert isinstance(e, Assigned)
        r = self._open(c, ref, e.reservation_id)
        if r is not None:
            r.state = "claimed" if ref.type == "ReservationClaimed" else "awaiting_receipt"
            r.node_id = e.node_id

    def _debit(self, c: Customer, ref: Ref, at: datetime, e: CustomerView) -> None:
        assert isinstance(e, Debited)
        amount, rid, rhash = int(e.amount_wei), e.reservation_id, e.receipt.receipt_hash
        c.balance -= amount
        c.reserved -= amount
        c.debits.append((at.timestamp(), amount))
        who = {"customer_id": c.customer_id, "reservation_id": rid, "receipt_hash": rhash}
        earlier = self.receipts.get(rhash)
        if earlier is not None:
            first = self.reservations[earlier].debit_ref if earlier in self.reservations else None
            self._report(Code.RECEIPT_REUSED, f"it settled {earlier} before", first, ref, **who)
        self.receipts[rhash] = rid
        r = self._open(c, ref, rid)
        if r is None:
            return
        if r.debit is not None:
            self._report(Code.DOUBLE_DEBIT, "a second debit", r.debit_ref, ref, **who)
        if amount > r.amount:
            detail = f"debit {amount} > reserved {r.amount}"
            self._report(Code.DEBIT_OVER_RESERVED, detail, r.created, ref, **who)
        usage = cost_of(e.receipt.body.usage, r.prompt_price, r.completion_price, r.amount)
        if amount != usage:
            detail = f"debit {amount}, the receipt's usage at the reserved prices is {usage}"
            self._report(Code.DEBIT_NOT_USAGE, detail, r.created, ref, **who)
        r.debit, r.debit_ref, r.debit_append = amount, ref, c.append_no
        r.receipt_hash, r.node_id, r.state = rhash, e.receipt.body.node_id, SETTLED

    def _payout(self, c: Customer, ref: Ref, _at: datetime, e: CustomerView) -> None:
        assert isinstance(e, PaidOut)
        rid, pid = e.reservation_id, e.payout_id
        who = {"customer_id": c.customer_id, "reservation_id": rid, "payout_id": pid}
        if pid in self.payouts:
            first = self.payouts[pid].ref
            self._report(Code.DUPLICATE_PAYOUT, "payout id used twice", first, ref, **who)
            return
        self.payouts[pid] = Payout(e, ref)
        r = self.reservations.get(rid)
        if (
            r is None
            or r.debit_ref is None
            or r.debit_append != c.append_no
            or r.receipt_hash != e.receipt_hash
            or r.node_id != e.node_id
        ):
            detail = "no debit of this receipt and node in the same append"
            debit = r.debit_ref if r is not None else None
            self._report(
                Code.PAYOUT_WITHOUT_RECEIPT, detail, debit, ref, receipt_hash=e.receipt_hash, **who
            )
            return
        if r.payout_ref is not None:
            detail = "a second payout for one debit"
            self._report(Code.DUPLICATE_PAYOUT, detail, r.payout_ref, ref, **who)
        r.payout_ref = ref
        if r.debit is not None and int(e.amount_wei) + int(e.fee_wei) != r.debit:
            detail = f"payout {e.amount_wei} + fee {e.fee_wei} != debit {r.debit}"
            self._report(Code.PAYOUT_AMOUNT, detail, r.debit_ref, ref, **who)

    def _release(self, c: Customer, ref: Ref, _at: datetime, e: CustomerView) -> None:
        assert isinstance(e, Released)
        amount, rid = int(e.amount_wei), e.reservation_id
        c.reserved -= amount
        r = self._open(c, ref, rid)
        if r is None:
            return
        who = {"customer_id": c.customer_id, "reservation_id": rid}
        debited = r.debit or 0
        if (e.outcome == SETTLED) != (r.debit is not None) or e.outcome not in (SETTLED, RELEASED):
            detail = f"outcome {e.outcome!r} but {'a' if r.debit is not None else 'no'} debit"
            self._report(Code.RELEASE_OUTCOME, detail, *r.refs, ref, **who)
        elif debited + amount != r.amount:
            detail = f"debit {debited} + released {amount} != reserved {r.amount}"
            self._report(Code.RELEASE_AMOUNT, detail, *r.refs, ref, **who)
        if e.outcome == SETTLED and r.payout_ref is None:
            self._report(Code.PAYOUT_WITHOUT_RECEIPT, "settled with no payout", *r.refs, ref, **who)
        r.released, r.release_ref, r.outcome, r.state = amount, ref, e.outcome, e.outcome

    # --- payout batches -----------------------------------------------------------------

    def _batch_event(self, ref: Ref, e: PayoutBatchEvent) -> None:
        bid = e.batch_id
        b = self.batches.setdefault(bid, Batch())
        why = transition_refusal(b.state, e)
        if why is not None:
            self._report(Code.BATCH_TRANSITION, why, b.ref, ref, batch_id=bid)
        elif b.state is not None and e.merkle_root != b.root:
            self._report(Code.BATCH_ROOT, "the root changed", b.ref, ref, batch_id=bid)
        if isinstance(e, PayoutBatchPreviewed | PayoutBatchCreated):
            b.root, b.payout_count, b.total = e.merkle_root, e.payout_count, int(e.total_amount_wei)
            if root_of(e.rows) != e.merkle_root or len(e.rows) != e.payout_count:
                self._report(Code.BATCH_ROOT, "the rows do not give the root", ref, batch_id=bid)
            if isinstance(e, PayoutBatchCreated):
                self._claim(ref, e)
        b.state, b.ref = STATE_AFTER[type(e)], ref

    def _claim(self, ref: Ref, e: PayoutBatchCreated) -> None:
        for row in e.rows:
            p = self.payouts.get(row.payout_id)
            who = {"batch_id": e.batch_id, "payout_id": row.payout_id}
            if p is None:
                self._report(Code.BATCH_UNKNOWN_PAYOUT, "no such payout", ref, **who)
                continue
            if (p.node_id, p.receipt_hash, str(p.amount)) != (
                row.node_id,
                row.receipt_hash,
                row.amount_wei,
            ):
                self._report(
                    Code.BATCH_ROW_MISMATCH, "the row is not the payout", p.ref, ref, **who
                )
            if p.batch_id is not None:
                earlier = self.batches[p.batch_id].ref
                detail = f"already in batch {p.batch_id}"
                self._report(Code.BATCHED_TWICE, detail, p.ref, earlier, ref, **who)
                continue
            p.batch_id = e.batch_id

    # --- the end ------------------------------------------------------------------------

    def finish(self) -> list[Discrepancy]:
        """Checks that need the whole log: every settlement complete. Returns everything."""
        for rid, r in self.reservations.items():
            if r.debit is not None and r.release_ref is None:
                self._report(
                    Code.UNFINISHED_SETTLEMENT,
                    "a debit with no release in its append",
                    *r.refs,
                    customer_id=r.customer_id,
                    reservation_id=rid,
                    receipt_hash=r.receipt_hash,
                )
        return self.discrepancies

    def window_spend(self, c: Customer) -> int:
        """Debits in the customer's rolling window, as of the log's last event."""
        if self.last_at is None:
            return 0
        return c.spend_since(self.last_at.timestamp() - c.window_s)

    def pending_payouts(self) -> Iterator[tuple[str, Payout]]:
        return ((pid, p) for pid, p in self.payouts.items() if p.batch_id is None)

    def node_totals(self) -> dict[str, tuple[int, int, int]]:
        """node id → (payouts, wei owed, wei of fees)."""
        totals: dict[str, tuple[int, int, int]] = {}
        for p in self.payouts.values():
            n, owed, fees = totals.get(p.node_id, (0, 0, 0))
            totals[p.node_id] = (n + 1, owed + p.amount, fees + p.fee)
        return totals
