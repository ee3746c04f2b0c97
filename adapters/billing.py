"""The billing service the gateway calls: authenticate, price, quote, reserve, claim,
settle (after verifying the node's signed receipt), release, and the stale sweep.

Every money decision goes through the customer's lane (``AccountLanes``): decided on the
subject's last event, appended conditionally, re-decided on a race with another process.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import msgspec

from adapters.account_lanes import AccountLanes
from adapters.gateway_keys import GatewayKeySecrets
from adapters.http.problems import ApiError
from adapters.projector import wait_for_projection
from adapters.refreshing import Refreshing
from domain.billing.books import Books, account_of
from domain.billing.money import Price, Quote, fee_of, quote_for
from domain.billing.prices import book_of, price_in
from domain.billing.state import (
    OPEN_STATES,
    AccountState,
    FinishedReservation,
    OpenReservation,
    Policy,
)
from domain.canonical import sha256_hex
from domain.decoding import decode_stored
from domain.envelope import StoredEvent
from domain.events import Event, PriceEntry
from domain.ids import uuid7
from domain.nodes import Refused
from domain.receipts import Receipt, verify_receipt
from domain.signing import Keyring
from projections import billing_queries as q
from projections.billing import BillingProjection

R = TypeVar("R")
STATUS_OF_CODE = {
    "insufficient_balance": 402,
    "gateway_spend_cap_exceeded": 402,
    "gateway_api_key_scope_denied": 403,
    "unauthorized": 401,
    "invalid_signature": 401,
    "not_found": 404,
    "reservation_not_found": 404,
    "model_not_found": 404,
    "too_many_open_reservations": 429,
    "reservation_finished": 409,
    "receipt_mismatch": 409,
    "invalid_state": 409,
    "invalid_adjustment": 409,
    "customer_exists": 409,
}
TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden"}
TITLES |= {404: "Not Found", 409: "Conflict", 429: "Too Many Requests"}
PRICE_BOOK_TTL_S = 1.0
"""Prices are reused this long, then read again behind the requests (see Refreshing)."""
PRICE_BOOK_STALE_S = 5.0
PROJECTED_WAIT_S = 5.0
"""How long a retry of a forgotten reservation waits for the read models to catch up."""


def billing_error(code: str, detail: str) -> ApiError:
    status = STATUS_OF_CODE.get(code, 400)
    return ApiError(status, code, TITLES.get(status, "Refused"), detail)


class GatewayPrincipal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a gateway key speaks for, and what it may buy (the customer's policy too)."""

    customer_id: str
    key_id: str
    scopes: tuple[str, ...]
    policy: Policy
    customer_policy: Policy
    expires_at: datetime | None


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    customer_id: str
    job_id: str
    state: str
    amount_wei: int
    """What is held (for a finished reservation: what was debited plus released)."""
    node_id: str | None = None
    debited_wei: int | None = None
    receipt_hash: str | None = None
    existing: bool = False
    """True when a retry found it: nothing new was held."""


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    job_id: str
    receipt_hash: str
    node_id: str | None
    debited_wei: int
    released_wei: int
    payout_wei: int
    fee_wei: int
    duplicate: bool
    """True when this receipt had settled it already: nothing new was debited."""


class StaleRelease(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    job_id: str | None
    state: str
    amount_wei: int
    updated_at: datetime
    released: bool


def reservation_id_for(customer_id: str, idempotency_key: str | None) -> str:
    """Deterministic from the key's hash, so a retried request finds its reservation."""
    if idempotency_key is None:
        return "rsv_" + uuid7().replace("-", "")
    key_hash = sha256_hex(idempotency_key.encode())
    return "rsv_" + sha256_hex(f"{customer_id}:{key_hash}".encode())[:32]


def _reservation(
    customer_id: str, found: OpenReservation | FinishedReservation | None, existing: bool
) -> Reservation:
    if isinstance(found, OpenReservation):
        return Reservation(
            reservation_id=found.reservation_id,
            customer_id=customer_id,
            job_id=found.job_id,
            state=found.state,
            amount_wei=int(found.amount_wei),
            node_id=found.node_id,
            existing=existing,
        )
    assert found is not None
    return Reservation(
        reservation_id=found.reservation_id,
        customer_id=customer_id,
        job_id=found.job_id,
        state=found.state,
        amount_wei=int(found.debited_wei) + int(found.released_wei),
        node_id=found.node_id,
        debited_wei=int(found.debited_wei),
        receipt_hash=found.receipt_hash,
        existing=existing,
    )


class Billing:
    def __init__(
        self,
        pool: asyncpg.Pool,
        lanes: AccountLanes,
        secrets: GatewayKeySecrets,
        *,
        stale_after_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self.lanes = lanes
        self.secrets = secrets
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._book: Refreshing[None, tuple[PriceEntry, ...]] = Refreshing(
            "the price book", fresh_s=PRICE_BOOK_TTL_S, stale_s=PRICE_BOOK_STALE_S
        )

    @property
    def fee_bps(self) -> int:
        return self.lanes.rules.fee_bps

    async def submit(
        self,
        customer_id: str,
        op: Callable[[Books], tuple[list[Event], R]],
        *,
        after_s: float = 0.0,
    ) -> R:
        try:
            return await self.lanes.submit(customer_id, op, after_s=after_s)
        except Refused as refused:
            raise billing_error(refused.code, refused.reason) from None
        except ValueError:  # not a valid subject token: no such customer
            raise billing_error("not_found", "no such customer") from None

    async def account(self, customer_id: str) -> AccountState | None:
        """The customer's account as the log has it now."""
        try:
            tail = await self._tail(customer_id)
        except ValueError:
            return None
        return _account_at(tail)

    async def _tail(self, customer_id: str) -> StoredEvent | None:
        """The last event on the customer's subject (ValueError: not a valid id)."""
        return await self.lanes.recorder.store.last(self.lanes.subject(customer_id))

    # --- who is asking, and what it costs -----------------------------------------------

    async def authenticate(self, secret: str) -> GatewayPrincipal | None:
        owner = await self.secrets.lookup(secret, self._clock())
        if owner is None:
            return None
        state = self.lanes.seen.get(owner.customer_id) or await self.account(owner.customer_id)
        key = None if state is None else state.keys.get(owner.key_id)
        if state is None or key is None or key.revoked:
            return None
        return GatewayPrincipal(
            customer_id=owner.customer_id,
            key_id=key.key_id,
            scopes=key.scopes,
            policy=key.policy,
            customer_policy=state.policy,
            expires_at=key.expires_at,
        )

    async def price_book(self) -> tuple[PriceEntry, ...]:
        async def load() -> tuple[PriceEntry, ...]:
            subject = self.lanes.recorder.topology.subject("pricebook", "default")
            tail = await self.lanes.recorder.store.last(subject)
            return book_of(None if tail is None else decode_stored(tail).event)

        return await self._book.get(None, load)

    def forget_prices(self) -> None:
        self._book.forget()

    async def price(self, model: str, profile_id: str | None = None) -> Price | None:
        return price_in(await self.price_book(), model, profile_id)

    async def quote(  # noqa: PLR0917
        self,
        principal: GatewayPrincipal,
        model: str,
        prompt_tokens: int,
        max_tokens: int,
        max_price_wei: int | None = None,
        profile_id: str | None = None,
    ) -> Quote:
        """The most this request may cost; refused early when no policy could allow it
        (the reservation decides again on the account itself)."""
        price = await self.price(model, profile_id)
        if price is None:
            raise billing_error("model_not_found", f"the model {model} has no price")
        try:
            quoted = quote_for(price, prompt_tokens, max_tokens)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", "Bad Request", str(exc)) from None
        for policy in (principal.policy, principal.customer_policy):
            if policy.allowed_models is not None and model not in policy.allowed_models:
                raise billing_error("gateway_api_key_scope_denied", f"model {model} not allowed")
            limit = policy.max_price_wei
            if limit is not None and quoted.amount_wei > int(limit):
                raise billing_error("gateway_api_key_scope_denied", "quote above max_price_wei")
        if max_price_wei is not None and quoted.amount_wei > max_price_wei:
            raise billing_error("gateway_api_key_scope_denied", "quote above the request's limit")
        return quoted

    # --- the money path -----------------------------------------------------------------

    async def reserve(
        self,
        principal: GatewayPrincipal,
        *,
        model: str,
        route_tier: str,
        quote: Quote,
        job_id: str,
        idempotency_key: str | None = None,
        reservation_id: str | None = None,
    ) -> Reservation:
        """``reservation_id``: one the caller chose (with ``reservation_id_for``) to start
        work under before the hold is on the log; by default it is made here."""
        if quote.model != model:
            raise ApiError(400, "invalid_request", "Bad Request", "the quote is for another model")
        customer_id = principal.customer_id
        rid = reservation_id or reservation_id_for(customer_id, idempotency_key)
        if idempotency_key is not None:
            earlier = await self._forgotten(customer_id, rid)
            if earlier is not None and earlier.state not in OPEN_STATES:
                return earlier

        def op(b: Books) -> tuple[list[Event], tuple[bool, Any]]:
            events = b.reserve(
                principal.key_id,
                rid,
                job_id,
                quote,
                route_tier,
                idempotent=idempotency_key is not None,
            )
            return events, (bool(events), b.outcome(rid))

        created, found = await self.submit(customer_id, op)
        return _reservation(customer_id, found, existing=not created)

    def has_room_for(self, principal: GatewayPrincipal, amount_wei: int) -> bool:
        """A hint from this process's latest view of the account, never a decision: room
        for this quote twice over and no spend cap that could refuse it. Work started on
        the hint before the hold lands is rarely thrown away."""
        seen = self.lanes.seen.get(principal.customer_id)
        if seen is None or any(
            p.spend_cap_wei is not None for p in (principal.policy, principal.customer_policy)
        ):
            return False
        return int(seen.balance_wei) - int(seen.reserved_wei) >= 2 * amount_wei

    async def _forgotten(self, customer_id: str, reservation_id: str) -> Reservation | None:
        """An idempotent reservation finished so long ago that its account no longer
        keeps it: once the account has let go of any, the read models must have caught
        up with the account before "not found" may mean new."""
        found = await self._projected(reservation_id)
        if found is not None:
            return found
        tail = await self._tail(customer_id)
        state = _account_at(tail)
        if state is None or len(state.finished) < self.lanes.rules.finished_kept:
            return None  # it has forgotten none: the decision itself will know
        return await self._projected(reservation_id, through=tail)

    async def _finished_before(self, customer_id: str, reservation_id: str) -> Reservation | None:
        """A reservation its account no longer holds: finished, as the read models have
        it once they have caught up with the account."""
        return await self._projected(reservation_id, through=await self._tail(customer_id))

    async def _projected(
        self, reservation_id: str, through: StoredEvent | None = None
    ) -> Reservation | None:
        """A finished reservation as the read models have it; ``through``: once they
        have applied that event (bounded wait), for a reservation its account forgot."""
        if through is not None:
            await wait_for_projection(
                self._pool, BillingProjection.name, through.stream, through.seq, PROJECTED_WAIT_S
            )
        async with self._pool.acquire() as conn:
            row = await q.reservation(conn, reservation_id)
        if row is None:
            return None
        return Reservation(
            reservation_id=row.reservation_id,
            customer_id=row.customer_id,
            job_id=row.job_id or "",
            state=row.state,
            amount_wei=row.amount_wei or 0,
            node_id=row.node_id,
            debited_wei=row.debited_wei,
            receipt_hash=row.receipt_hash,
            existing=True,
        )

    async def claim(self, reservation: Reservation, node_id: str) -> Reservation:
        rid = reservation.reservation_id

        def op(b: Books) -> tuple[list[Event], Any]:
            return b.claim(rid, node_id), b.outcome(rid)

        found = await self.submit(reservation.customer_id, op)
        return _reservation(reservation.customer_id, found, existing=False)

    async def await_receipt(self, reservation: Reservation, node_id: str) -> Reservation:
        rid = reservation.reservation_id

        def op(b: Books) -> tuple[list[Event], Any]:
            return b.await_receipt(rid, node_id), b.outcome(rid)

        found = await self.submit(reservation.customer_id, op)
        return _reservation(reservation.customer_id, found, existing=False)

    async def settle(
        self,
        reservation: Reservation,
        receipt: Receipt,
        node_keys: Keyring,
        *,
        after_s: float = 0.0,
    ) -> Settlement:
        """Verify the receipt (hash over its body, then the node's signature), then debit,
        owe the node and release the rest in one append. Refused receipts append nothing.
        ``after_s``: the append may wait that long to go out with other settlements."""
        problem = verify_receipt(receipt, node_keys)
        if problem is not None:
            raise billing_error(problem, "the receipt does not verify")
        rid = reservation.reservation_id

        def op(b: Books) -> tuple[list[Event], tuple[bool, FinishedReservation]]:
            events = b.settle(rid, receipt)
            return events, (bool(events), b.closed.get(rid) or b.finished[rid])

        try:
            created, done = await self.submit(reservation.customer_id, op, after_s=after_s)
        except ApiError as exc:
            earlier = (
                await self._finished_before(reservation.customer_id, rid)
                if exc.code == "reservation_not_found"
                else None
            )
            if earlier is None or earlier.state in OPEN_STATES:
                raise
            if earlier.receipt_hash != receipt.receipt_hash:
                why = f"the reservation is already {earlier.state}"
                raise billing_error("reservation_finished", why) from None
            debited, held = earlier.debited_wei or 0, earlier.amount_wei
            return self._settlement(rid, earlier.job_id, receipt, debited, held - debited, True)
        return self._settlement(
            rid, done.job_id, receipt, int(done.debited_wei), int(done.released_wei), not created
        )

    def _settlement(  # noqa: PLR0917
        self,
        rid: str,
        job_id: str,
        receipt: Receipt,
        debited: int,
        released: int,
        duplicate: bool,
    ) -> Settlement:
        fee = fee_of(debited, self.fee_bps)
        return Settlement(
            reservation_id=rid,
            job_id=job_id,
            receipt_hash=receipt.receipt_hash,
            node_id=receipt.body.node_id,
            debited_wei=debited,
            released_wei=released,
            payout_wei=debited - fee,
            fee_wei=fee,
            duplicate=duplicate,
        )

    async def release(self, reservation: Reservation, reason: str) -> Reservation:
        """Give the hold back, no debit (failure, timeout, no receipt). A reservation that
        finished before keeps its outcome."""
        rid = reservation.reservation_id

        def op(b: Books) -> tuple[list[Event], tuple[bool, Any]]:
            events = b.release(rid, reason)
            return events, (bool(events), b.outcome(rid))

        try:
            released, found = await self.submit(reservation.customer_id, op)
        except ApiError as exc:
            earlier = (
                await self._finished_before(reservation.customer_id, rid)
                if exc.code == "reservation_not_found"
                else None
            )
            if earlier is None or earlier.state in OPEN_STATES:
                raise
            return earlier
        return _reservation(reservation.customer_id, found, existing=not released)

    async def release_stale(
        self, older_than_s: float | None = None, *, dry_run: bool = False, limit: int = 1000
    ) -> list[StaleRelease]:
        """Open reservations unchanged for ``older_than_s``: listed, or released. Each
        release is decided again on the account, so one that moved on since stays."""
        cutoff = self._clock() - timedelta(seconds=older_than_s or self.stale_after_s)
        async with self._pool.acquire() as conn:
            rows = await q.stale_reservations(conn, cutoff, limit)
        if dry_run:
            return [_stale(r, released=False) for r in rows]

        async def one(row: q.ReservationRow) -> StaleRelease:
            rid = row.reservation_id

            def op(b: Books) -> tuple[list[Event], bool]:
                events = b.release(rid, "stale", stale_before=cutoff)
                return events, bool(events)

            try:
                released = await self.submit(row.customer_id, op)
            except ApiError:
                released = False  # finished meanwhile, or forgotten: nothing to release
            return _stale(row, released=released)

        return list(await asyncio.gather(*(one(r) for r in rows)))


def _account_at(tail: StoredEvent | None) -> AccountState | None:
    return None if tail is None else account_of(decode_stored(tail).event)


def _stale(row: q.ReservationRow, *, released: bool) -> StaleRelease:
    return StaleRelease(
        reservation_id=row.reservation_id,
        job_id=row.job_id,
        state=row.state,
        amount_wei=row.amount_wei or 0,
        updated_at=row.updated_at,
        released=released,
    )
