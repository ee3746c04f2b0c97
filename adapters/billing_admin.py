"""What admins do to billing: customers, credit, policies, gateway keys, prices. Every
change is an event (with who and why) on the customer's subject or the price book."""

from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import msgspec

from adapters.billing import Billing, billing_error
from adapters.gateway_keys import new_key
from adapters.http.problems import ApiError
from domain.billing.books import Books, new_account
from domain.billing.prices import book_of, decide_price
from domain.billing.state import AccountState, KeyAccount, Policy
from domain.decoding import Decoded
from domain.events import Event, PriceEntry
from domain.ids import uuid7
from domain.nodes import Refused
from projections import billing_queries as q


class IssuedKey(msgspec.Struct, frozen=True, kw_only=True):
    key: KeyAccount
    customer_id: str
    secret: str
    """Shown once; only its hash is kept."""


class BillingAdmin:
    def __init__(
        self, pool: asyncpg.Pool, billing: Billing, *, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self.billing = billing
        self._clock = clock

    async def _change(
        self, customer_id: str, decide: Callable[[Books], list[Event]]
    ) -> AccountState:
        def op(b: Books) -> tuple[list[Event], AccountState]:
            events = decide(b)
            return events, b.freeze()

        return await self.billing.submit(customer_id, op)

    async def create_customer(
        self, name: str, policy: Policy, by: str, customer_id: str | None = None
    ) -> AccountState:
        customer_id = customer_id or "cus_" + uuid7().replace("-", "")
        now = self._clock()
        recorder = self.billing.lanes.recorder
        try:
            subject = self.billing.lanes.subject(customer_id)
            await recorder.record(
                subject,
                lambda tail: new_account(
                    None if tail is None else getattr(tail.event, "account", None),
                    customer_id,
                    name,
                    policy,
                    by,
                    now,
                ),
            )
        except Refused as refused:
            raise billing_error(refused.code, refused.reason) from None
        except ValueError:
            raise ApiError(400, "invalid_request", "Bad Request", "customer_id: bad id") from None
        found = await self.billing.account(customer_id)
        assert found is not None
        return found

    async def grant(self, customer_id: str, amount_wei: int, reason: str, by: str) -> AccountState:
        return await self._change(customer_id, lambda b: b.grant(amount_wei, reason, by))

    async def adjust(self, customer_id: str, amount_wei: int, reason: str, by: str) -> AccountState:
        return await self._change(customer_id, lambda b: b.adjust(amount_wei, reason, by))

    async def set_policy(
        self, customer_id: str, policy: Policy, by: str, reason: str
    ) -> AccountState:
        return await self._change(customer_id, lambda b: b.set_policy(policy, by, reason))

    async def issue_key(  # noqa: PLR0917
        self,
        customer_id: str,
        name: str,
        scopes: tuple[str, ...],
        policy: Policy,
        expires_in_s: float | None,
        by: str,
    ) -> IssuedKey:
        key_id, secret = new_key()
        now = self._clock()
        expires_at = None if expires_in_s is None else now + timedelta(seconds=expires_in_s)
        # The event first: a key the log does not know of must never work.
        state = await self._change(
            customer_id, lambda b: b.issue_key(key_id, name, scopes, policy, expires_at, by)
        )
        await self.billing.secrets.store(key_id, customer_id, secret, expires_at)
        return IssuedKey(key=state.keys[key_id], customer_id=customer_id, secret=secret)

    async def revoke_key(self, key_id: str, by: str, reason: str) -> str:
        """Revoked at once for authentication, then on the log; returns the customer id."""
        owner = await self.billing.secrets.revoke(key_id, self._clock())
        if owner is None:
            raise billing_error("not_found", "no such gateway key")
        await self._change(owner.customer_id, lambda b: b.revoke_key(key_id, by, reason))
        return owner.customer_id

    async def set_key_policy(self, key_id: str, policy: Policy, by: str, reason: str) -> KeyAccount:
        owner = await self.billing.secrets.owner(key_id)
        if owner is None:
            raise billing_error("not_found", "no such gateway key")
        state = await self._change(
            owner.customer_id, lambda b: b.set_key_policy(key_id, policy, by, reason)
        )
        return state.keys[key_id]

    async def keys(self, customer_id: str) -> list[q.KeyRow]:
        async with self._pool.acquire() as conn:
            return await q.keys_of(conn, customer_id)

    async def set_price(
        self,
        model: str,
        profile_id: str | None,
        prompt_price_wei: int,
        completion_price_wei: int,
        by: str,
    ) -> tuple[PriceEntry, ...]:
        recorder = self.billing.lanes.recorder
        after: list[tuple[PriceEntry, ...]] = []

        def decide(tail: Decoded | None) -> list[Event]:
            book = book_of(None if tail is None else tail.event)
            events = decide_price(
                book, model, profile_id, prompt_price_wei, completion_price_wei, by
            )
            after[:] = [book_of(events[-1]) if events else book]
            return events

        await recorder.record(recorder.topology.subject("pricebook", "default"), decide)
        self.billing.forget_prices()
        return after[0]
