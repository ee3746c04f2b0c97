"""A customer's account as decisions (pure; the clock is an input).

``Books`` is a working copy of one account: decisions apply to it one after another, each
returning its events or raising ``Refused``. ``decide_batch`` runs many decisions over one
state and attaches the account after them to the batch's last event, so concurrent
requests of one customer become one atomic append with every caller's own outcome.
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import msgspec

from domain.billing.money import Quote, cost_of, fee_of
from domain.billing.spend import add_spend, window_spend
from domain.billing.state import (
    AWAITING_RECEIPT,
    CLAIMED,
    INFERENCE,
    QUEUED,
    RELEASED,
    SETTLED,
    AccountState,
    FinishedReservation,
    KeyAccount,
    OpenReservation,
    Policy,
)
from domain.events import (
    CreditAdjusted,
    CreditGranted,
    CustomerCreated,
    CustomerDebited,
    CustomerPolicySet,
    Event,
    GatewayKeyIssued,
    GatewayKeyPolicySet,
    GatewayKeyRevoked,
    NodePayoutCreated,
    ReservationAwaitingReceipt,
    ReservationClaimed,
    ReservationCreated,
    ReservationReleased,
)
from domain.nodes import Refused
from domain.readiness import PAID_TIERS
from domain.receipts import Receipt

R = TypeVar("R")
Op = Callable[["Books"], tuple[list[Event], R]]
"""One decision over the books: its events and what its caller gets back."""


class Rules(NamedTuple):
    fee_bps: int = 0
    """The protocol's fee on every debit, in basis points."""
    max_open: int = 1000
    """Open reservations one customer may hold (bounds the account on the log)."""
    finished_kept: int = 64
    """Finished reservations made with an Idempotency-Key that the account remembers for
    retries (older outcomes are answered from the read models)."""
    receipt_skew_s: float = 300.0
    """How much earlier than its reservation a receipt may say it was made."""


def account_of(event: Event | None) -> AccountState | None:
    return getattr(event, "account", None) if event is not None else None


def _seconds(now: datetime) -> int:
    return int(now.timestamp())


def _allows(policy: Policy, model: str, route_tier: str, amount_wei: int) -> str | None:
    """Why ``policy`` refuses this purchase, or None."""
    if policy.allowed_models is not None and model not in policy.allowed_models:
        return f"model {model} is not allowed"
    if policy.allowed_route_tiers is not None and route_tier not in policy.allowed_route_tiers:
        return f"route tier {route_tier} is not allowed"
    if policy.max_price_wei is not None and amount_wei > int(policy.max_price_wei):
        return f"the quote {amount_wei} wei is above max_price_wei {policy.max_price_wei}"
    return None


class Books:
    def __init__(self, state: AccountState, rules: Rules, now: datetime) -> None:
        self.state = state
        self.rules = rules
        self.now = now
        self.policy = state.policy
        self.balance = int(state.balance_wei)
        self.reserved = int(state.reserved_wei)
        self.spend = state.spend
        self.keys = dict(state.keys)
        self.open = dict(state.open)
        self.finished = {f.reservation_id: f for f in state.finished}
        """Idempotent reservations' outcomes, as the account keeps them."""
        self.closed: dict[str, FinishedReservation] = {}
        """Every reservation these decisions finished, idempotent or not."""

    @property
    def customer_id(self) -> str:
        return self.state.customer_id

    @property
    def available(self) -> int:
        return self.balance - self.reserved

    def _totals(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "balance_after_wei": str(self.balance),
            "reserved_after_wei": str(self.reserved),
        }

    def freeze(self) -> AccountState:
        now_s = _seconds(self.now)
        keys = {}
        for key_id, key in self.keys.items():
            spend = add_spend(key.spend, now_s, key.policy.spend_window_s, 0)
            idle = key.reserved_wei == "0"
            expired = key.expires_at is not None and key.expires_at <= self.now
            if idle and (key.revoked or expired) and not spend:
                continue  # nothing left to account for: it can be forgotten
            keys[key_id] = key if spend == key.spend else msgspec.structs.replace(key, spend=spend)
        kept = list(self.finished.values())[-self.rules.finished_kept :]
        return msgspec.structs.replace(
            self.state,
            policy=self.policy,
            balance_wei=str(self.balance),
            reserved_wei=str(self.reserved),
            spend=add_spend(self.spend, now_s, self.policy.spend_window_s, 0),
            keys=keys,
            open=self.open,
            finished=tuple(kept),
        )

    # --- credit and policy --------------------------------------------------------------

    def grant(self, amount_wei: int, reason: str, by: str) -> list[Event]:
        if amount_wei <= 0:
            raise Refused("invalid_amount", "a credit grant must be positive")
        self.balance += amount_wei
        return [
            CreditGranted(
                amount_wei=str(amount_wei), reason=reason, granted_by=by, **self._totals()
            )
        ]

    def adjust(self, amount_wei: int, reason: str, by: str) -> list[Event]:
        if amount_wei == 0:
            raise Refused("invalid_amount", "an adjustment must not be zero")
        if self.balance + amount_wei < self.reserved:
            raise Refused("invalid_adjustment", "the balance would fall below what is reserved")
        self.balance += amount_wei
        return [
            CreditAdjusted(
                amount_wei=str(amount_wei), reason=reason, adjusted_by=by, **self._totals()
            )
        ]

    def set_policy(self, policy: Policy, by: str, reason: str) -> list[Event]:
        self.policy = policy
        return [CustomerPolicySet(policy=policy, set_by=by, reason=reason, **self._totals())]

    # --- gateway keys -------------------------------------------------------------------

    def issue_key(  # noqa: PLR0917
        self,
        key_id: str,
        name: str,
        scopes: tuple[str, ...],
        policy: Policy,
        expires_at: datetime | None,
        by: str,
    ) -> list[Event]:
        if key_id in self.keys:
            return []  # a retried issue
        self.keys[key_id] = KeyAccount(
            key_id=key_id, name=name, scopes=scopes, policy=policy, expires_at=expires_at
        )
        return [
            GatewayKeyIssued(
                key_id=key_id,
                name=name,
                scopes=scopes,
                policy=policy,
                expires_at=expires_at,
                issued_by=by,
                **self._totals(),
            )
        ]

    def set_key_policy(self, key_id: str, policy: Policy, by: str, reason: str) -> list[Event]:
        key = self.keys.get(key_id)
        if key is None or key.revoked:
            raise Refused("not_found", "no such gateway key")
        self.keys[key_id] = msgspec.structs.replace(key, policy=policy)
        return [
            GatewayKeyPolicySet(
                key_id=key_id, policy=policy, set_by=by, reason=reason, **self._totals()
            )
        ]

    def revoke_key(self, key_id: str, by: str, reason: str) -> list[Event]:
        key = self.keys.get(key_id)
        if key is None or key.revoked:
            return []  # revoked before (and perhaps forgotten since)
        self.keys[key_id] = msgspec.structs.replace(key, revoked=True)
        return [GatewayKeyRevoked(key_id=key_id, revoked_by=by, reason=reason, **self._totals())]

    def usable_key(self, key_id: str, scope: str) -> KeyAccount:
        key = self.keys.get(key_id)
        if key is None or key.revoked:
            raise Refused("unauthorized", "the gateway key is revoked or unknown")
        if key.expires_at is not None and key.expires_at <= self.now:
            raise Refused("unauthorized", "the gateway key has expired")
        if scope not in key.scopes:
            raise Refused("gateway_api_key_scope_denied", f"the key lacks the {scope} scope")
        return key

    # --- reservations -------------------------------------------------------------------

    def reserve(
        self,
        key_id: str,
        reservation_id: str,
        job_id: str,
        quote: Quote,
        route_tier: str,
        *,
        idempotent: bool = False,
    ) -> list[Event]:
        """``idempotent``: the caller may retry it by id after it has finished, so its
        outcome is remembered (others have random ids nobody can retry)."""
        if reservation_id in self.open or reservation_id in self.finished:
            return []  # a retried reserve: the same reservation, never a second hold
        key = self.usable_key(key_id, INFERENCE)
        amount = quote.amount_wei
        if route_tier not in PAID_TIERS:
            raise Refused("gateway_api_key_scope_denied", f"route tier {route_tier} is not paid")
        for policy in (self.policy, key.policy):
            why = _allows(policy, quote.model, route_tier, amount)
            if why is not None:
                raise Refused("gateway_api_key_scope_denied", why)
        if len(self.open) >= self.rules.max_open:
            raise Refused("too_many_open_reservations", "too many requests in flight")
        if self.available < amount:
            raise Refused("insufficient_balance", "the available balance does not cover the quote")
        now_s = _seconds(self.now)
        held_by_key = int(key.reserved_wei)
        for policy, spend, held in (
            (self.policy, self.spend, self.reserved),
            (key.policy, key.spend, held_by_key),
        ):
            if policy.spend_cap_wei is None:
                continue
            spent = window_spend(spend, now_s, policy.spend_window_s)
            if spent + held + amount > int(policy.spend_cap_wei):
                raise Refused("gateway_spend_cap_exceeded", "the rolling spend cap is reached")
        self.reserved += amount
        self.keys[key_id] = msgspec.structs.replace(key, reserved_wei=str(held_by_key + amount))
        self.open[reservation_id] = OpenReservation(
            reservation_id=reservation_id,
            key_id=key_id,
            job_id=job_id,
            state=QUEUED,
            model=quote.model,
            profile_id=quote.profile_id,
            route_tier=route_tier,
            prompt_price_wei=str(quote.prompt_price_wei),
            completion_price_wei=str(quote.completion_price_wei),
            amount_wei=str(amount),
            created_at=self.now,
            updated_at=self.now,
            idempotent=idempotent,
        )
        return [
            ReservationCreated(
                reservation_id=reservation_id,
                key_id=key_id,
                job_id=job_id,
                model=quote.model,
                profile_id=quote.profile_id,
                route_tier=route_tier,
                prompt_tokens=quote.prompt_tokens,
                max_tokens=quote.max_tokens,
                prompt_price_wei=str(quote.prompt_price_wei),
                completion_price_wei=str(quote.completion_price_wei),
                amount_wei=str(amount),
                idempotent=idempotent,
                **self._totals(),
            )
        ]

    def _open(self, reservation_id: str) -> OpenReservation:
        found = self.open.get(reservation_id)
        if found is not None:
            return found
        if reservation_id in self.finished:
            raise Refused("reservation_finished", "the reservation is already finished")
        raise Refused("reservation_not_found", "no such open reservation")

    def claim(self, reservation_id: str, node_id: str) -> list[Event]:
        r = self._open(reservation_id)
        if r.state == CLAIMED and r.node_id == node_id:
            return []
        if r.state not in (QUEUED, CLAIMED):
            raise Refused("invalid_state", f"a reservation {r.state} cannot be claimed")
        self.open[reservation_id] = msgspec.structs.replace(
            r, state=CLAIMED, node_id=node_id, updated_at=self.now
        )
        return [
            ReservationClaimed(
                reservation_id=reservation_id, job_id=r.job_id, node_id=node_id, **self._totals()
            )
        ]

    def await_receipt(self, reservation_id: str, node_id: str) -> list[Event]:
        r = self._open(reservation_id)
        if r.state == AWAITING_RECEIPT and r.node_id == node_id:
            return []
        if r.node_id not in (None, node_id):
            raise Refused("invalid_state", "the reservation is claimed by another node")
        self.open[reservation_id] = msgspec.structs.replace(
            r, state=AWAITING_RECEIPT, node_id=node_id, updated_at=self.now
        )
        return [
            ReservationAwaitingReceipt(
                reservation_id=reservation_id, job_id=r.job_id, node_id=node_id, **self._totals()
            )
        ]

    def _unhold(self, r: OpenReservation, amount: int) -> None:
        self.reserved -= amount
        key = self.keys[r.key_id]
        self.keys[r.key_id] = msgspec.structs.replace(
            key, reserved_wei=str(int(key.reserved_wei) - amount)
        )

    def _finish(self, r: OpenReservation, done: FinishedReservation) -> None:
        del self.open[r.reservation_id]
        self.closed[r.reservation_id] = done
        if r.idempotent:
            self.finished[r.reservation_id] = done

    def settle(self, reservation_id: str, receipt: Receipt) -> list[Event]:
        """Debit usage at the reserved prices (at most the hold), owe the node its share,
        release the rest: one atomic batch. The receipt must be verified already."""
        done = self.finished.get(reservation_id)
        if done is not None:
            if done.state == SETTLED and done.receipt_hash == receipt.receipt_hash:
                return []  # a retried settlement
            raise Refused("reservation_finished", f"the reservation is already {done.state}")
        r = self._open(reservation_id)
        body = receipt.body
        if body.dispatch_id != reservation_id:
            # A receipt answers one dispatch, so it can never settle a second reservation.
            raise Refused("receipt_mismatch", "the receipt answers another dispatch")
        if body.model != r.model:
            raise Refused("receipt_mismatch", "the receipt is for another model")
        if r.node_id is not None and body.node_id != r.node_id:
            raise Refused("receipt_mismatch", "the receipt is from another node")
        if body.created_at_ms < (r.created_at.timestamp() - self.rules.receipt_skew_s) * 1000:
            raise Refused("receipt_mismatch", "the receipt is older than the reservation")
        held = int(r.amount_wei)
        cost = cost_of(body.usage, int(r.prompt_price_wei), int(r.completion_price_wei), held)
        fee = fee_of(cost, self.rules.fee_bps)
        now_s = _seconds(self.now)
        self.balance -= cost
        self._unhold(r, cost)
        self.spend = add_spend(self.spend, now_s, self.policy.spend_window_s, cost)
        key = self.keys[r.key_id]
        self.keys[r.key_id] = msgspec.structs.replace(
            key, spend=add_spend(key.spend, now_s, key.policy.spend_window_s, cost)
        )
        debited = CustomerDebited(
            reservation_id=reservation_id,
            job_id=r.job_id,
            key_id=r.key_id,
            amount_wei=str(cost),
            receipt=receipt,
            **self._totals(),
        )
        payout = NodePayoutCreated(
            payout_id=reservation_id,
            node_id=body.node_id,
            reservation_id=reservation_id,
            receipt_hash=receipt.receipt_hash,
            amount_wei=str(cost - fee),
            fee_wei=str(fee),
            fee_bps=self.rules.fee_bps,
            **self._totals(),
        )
        self._unhold(r, held - cost)
        self._finish(
            r,
            FinishedReservation(
                reservation_id=reservation_id,
                job_id=r.job_id,
                state=SETTLED,
                debited_wei=str(cost),
                released_wei=str(held - cost),
                receipt_hash=receipt.receipt_hash,
                node_id=body.node_id,
                reason="receipt",
            ),
        )
        released = ReservationReleased(
            reservation_id=reservation_id,
            job_id=r.job_id,
            key_id=r.key_id,
            amount_wei=str(held - cost),
            outcome=SETTLED,
            reason="receipt",
            **self._totals(),
        )
        return [debited, payout, released]

    def release(
        self, reservation_id: str, reason: str, stale_before: datetime | None = None
    ) -> list[Event]:
        """Give the whole hold back, no debit. With ``stale_before``: only when the
        reservation has not moved since then (a sweeper's release)."""
        if reservation_id in self.finished:
            return []  # released or settled before: that outcome stands
        r = self._open(reservation_id)
        if stale_before is not None and r.updated_at >= stale_before:
            return []
        held = int(r.amount_wei)
        self._unhold(r, held)
        self._finish(
            r,
            FinishedReservation(
                reservation_id=reservation_id,
                job_id=r.job_id,
                state=RELEASED,
                debited_wei="0",
                released_wei=str(held),
                node_id=r.node_id,
                reason=reason,
            ),
        )
        return [
            ReservationReleased(
                reservation_id=reservation_id,
                job_id=r.job_id,
                key_id=r.key_id,
                amount_wei=str(held),
                outcome=RELEASED,
                reason=reason,
                **self._totals(),
            )
        ]

    def outcome(self, reservation_id: str) -> OpenReservation | FinishedReservation | None:
        return (
            self.open.get(reservation_id)
            or self.closed.get(reservation_id)
            or self.finished.get(reservation_id)
        )


def new_account(  # noqa: PLR0917
    state: AccountState | None,
    customer_id: str,
    name: str,
    policy: Policy,
    by: str,
    now: datetime,
) -> list[Event]:
    if state is not None:
        raise Refused("customer_exists", "a customer with this id exists")
    account = AccountState(customer_id=customer_id, name=name, policy=policy, created_at=now)
    return [
        CustomerCreated(
            customer_id=customer_id,
            balance_after_wei="0",
            reserved_after_wei="0",
            name=name,
            policy=policy,
            created_by=by,
            account=account,
        )
    ]


def decide_batch(
    state: AccountState | None, ops: Sequence[Op[R]], rules: Rules, now: datetime
) -> tuple[list[Event], list[R | Refused]]:
    """Every decision in order over one working copy; a refusal affects its caller alone."""
    if state is None:
        unknown = Refused("not_found", "no such customer")
        return [], [unknown for _ in ops]
    books = Books(state, rules, now)
    events: list[Event] = []
    outcomes: list[R | Refused] = []
    for op in ops:
        try:
            produced, outcome = op(books)
        except Refused as refusal:
            outcomes.append(refusal)
            continue
        events.extend(produced)
        outcomes.append(outcome)
    if events:
        events[-1] = msgspec.structs.replace(events[-1], account=books.freeze())
    return events, outcomes


def decide_one(state: AccountState | None, op: Op[R], rules: Rules, now: datetime) -> list[Event]:
    """One decision alone: its events, or its refusal raised."""
    events, (outcome,) = decide_batch(state, [op], rules, now)
    if isinstance(outcome, Refused):
        raise outcome
    return events


def decide_reserve(  # noqa: PLR0917
    state: AccountState | None,
    key_id: str,
    reservation_id: str,
    job_id: str,
    quote: Quote,
    route_tier: str,
    rules: Rules,
    now: datetime,
) -> list[Event]:
    return decide_one(
        state,
        lambda b: (b.reserve(key_id, reservation_id, job_id, quote, route_tier), None),
        rules,
        now,
    )


def decide_settle(
    state: AccountState | None, reservation_id: str, receipt: Receipt, rules: Rules, now: datetime
) -> list[Event]:
    return decide_one(state, lambda b: (b.settle(reservation_id, receipt), None), rules, now)


def decide_release(
    state: AccountState | None, reservation_id: str, reason: str, rules: Rules, now: datetime
) -> list[Event]:
    return decide_one(state, lambda b: (b.release(reservation_id, reason), None), rules, now)
