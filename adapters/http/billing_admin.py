"""Admin billing endpoints: customers, credit, policies, gateway keys, prices, treasury."""

from datetime import datetime, timedelta
from typing import Annotated

import msgspec
from litestar import Controller, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from adapters.admin_tokens import AdminSession
from adapters.bootstrap import ControlPlane
from adapters.http.admin_auth import provide_session, require
from adapters.http.billing_schemas import (
    Adjustment,
    AdminAccountOut,
    Credit,
    NewCustomer,
    NewGatewayKey,
    NewPrice,
    PolicyChange,
    StaleSweep,
    Why,
    admin_account_out,
)
from adapters.http.problems import ApiError, problems
from domain.billing.state import Policy
from domain.events import PriceEntry
from projections import billing_queries as q


class IssuedKeyOut(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    customer_id: str
    name: str
    scopes: list[str]
    policy: Policy
    expires_at: datetime | None
    key: str
    """The b3iq_gateway_ secret: shown once, only its hash is kept."""


class KeyList(msgspec.Struct, frozen=True):
    data: list[q.KeyRow]


class KeyPolicyOut(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    policy: Policy


class Revoked(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    customer_id: str
    revoked: bool


class PriceList(msgspec.Struct, frozen=True):
    data: list[PriceEntry]


class StaleOut(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    job_id: str | None
    state: str
    amount_wei: str
    updated_at: datetime
    released: bool


class StaleList(msgspec.Struct, frozen=True, kw_only=True):
    dry_run: bool
    data: list[StaleOut]


class TreasuryReport(msgspec.Struct, frozen=True, kw_only=True):
    window_days: int
    since: datetime
    customer_debits_wei: str
    debit_count: int
    node_payouts_wei: str
    protocol_fees_wei: str
    payout_count: int
    fee_bps: int


def _window(plane: ControlPlane) -> int:
    return plane.settings.billing_spend_window_s


class BillingAdminController(Controller):
    path = "/v1/admin/billing"
    tags = ["billing-admin"]
    dependencies = {"session": provide_session}

    @post("/customers", summary="Create a customer (admin)", responses=problems(400, 401, 403, 409))
    async def create(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        data: JSONBody[NewCustomer],
    ) -> AdminAccountOut:
        require(session, "admin")
        policy = (data.policy.policy(_window(plane))) if data.policy else None
        state = await plane.managed.billing_admin.create_customer(
            data.name,
            policy or Policy(spend_window_s=_window(plane)),
            session.token_id,
            data.customer_id,
        )
        return admin_account_out(state)

    @get(
        "/customers/{customer_id:str}",
        summary="A customer's account, from the log",
        responses=problems(400, 401, 404),
    )
    async def show(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        customer_id: FromPath[str],
    ) -> AdminAccountOut:
        state = await plane.managed.billing.account(customer_id)
        if state is None:
            raise ApiError(404, "not_found", "Not Found", "no such customer")
        return admin_account_out(state)

    @post(
        "/customers/{customer_id:str}/credits",
        summary="Grant credit, with a reason",
        responses=problems(400, 401, 403, 404),
    )
    async def credit(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        customer_id: FromPath[str],
        data: JSONBody[Credit],
    ) -> AdminAccountOut:
        require(session, "admin")
        state = await plane.managed.billing_admin.grant(
            customer_id, int(data.amount_wei), data.reason, session.token_id
        )
        return admin_account_out(state)

    @post(
        "/customers/{customer_id:str}/adjustments",
        summary="Adjust credit (signed amount)",
        responses=problems(400, 401, 403, 404),
    )
    async def adjust(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        customer_id: FromPath[str],
        data: JSONBody[Adjustment],
    ) -> AdminAccountOut:
        require(session, "admin")
        state = await plane.managed.billing_admin.adjust(
            customer_id, int(data.amount_wei), data.reason, session.token_id
        )
        return admin_account_out(state)

    @put(
        "/customers/{customer_id:str}/policy",
        summary="Set a customer's policy",
        responses=problems(400, 401, 403, 404),
    )
    async def customer_policy(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        customer_id: FromPath[str],
        data: JSONBody[PolicyChange],
    ) -> AdminAccountOut:
        require(session, "admin")
        state = await plane.managed.billing_admin.set_policy(
            customer_id, data.policy.policy(_window(plane)), session.token_id, data.reason
        )
        return admin_account_out(state)

    @post(
        "/customers/{customer_id:str}/gateway-keys",
        summary="Issue a gateway key (once)",
        responses=problems(400, 401, 403, 404),
    )
    async def issue_key(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        customer_id: FromPath[str],
        data: JSONBody[NewGatewayKey],
    ) -> IssuedKeyOut:
        require(session, "admin")
        policy = data.policy.policy(_window(plane)) if data.policy else None
        issued = await plane.managed.billing_admin.issue_key(
            customer_id,
            data.name,
            tuple(dict.fromkeys(data.scopes)),
            policy or Policy(spend_window_s=_window(plane)),
            data.expires_in_s,
            session.token_id,
        )
        k = issued.key
        return IssuedKeyOut(
            key_id=k.key_id,
            customer_id=issued.customer_id,
            name=k.name,
            scopes=list(k.scopes),
            policy=k.policy,
            expires_at=k.expires_at,
            key=issued.secret,
        )

    @get(
        "/customers/{customer_id:str}/gateway-keys",
        summary="A customer's keys (no secrets)",
        responses=problems(400, 401, 404),
    )
    async def keys(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        customer_id: FromPath[str],
    ) -> KeyList:
        return KeyList(await plane.managed.billing_admin.keys(customer_id))

    @post(
        "/gateway-keys/{key_id:str}/revoke",
        summary="Revoke a gateway key",
        status_code=200,
        responses=problems(400, 401, 403, 404),
    )
    async def revoke(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        key_id: FromPath[str],
        data: JSONBody[Why],
    ) -> Revoked:
        require(session, "admin")
        customer_id = await plane.managed.billing_admin.revoke_key(
            key_id, session.token_id, data.reason
        )
        return Revoked(key_id=key_id, customer_id=customer_id, revoked=True)

    @put(
        "/gateway-keys/{key_id:str}/policy",
        summary="Set a gateway key's policy",
        responses=problems(400, 401, 403, 404),
    )
    async def key_policy(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        key_id: FromPath[str],
        data: JSONBody[PolicyChange],
    ) -> KeyPolicyOut:
        require(session, "admin")
        key = await plane.managed.billing_admin.set_key_policy(
            key_id, data.policy.policy(_window(plane)), session.token_id, data.reason
        )
        return KeyPolicyOut(key_id=key.key_id, policy=key.policy)

    @put(
        "/prices",
        summary="Set a model's (or profile's) per-token prices",
        responses=problems(400, 401, 403),
    )
    async def set_price(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        data: JSONBody[NewPrice],
    ) -> PriceList:
        require(session, "admin")
        book = await plane.managed.billing_admin.set_price(
            data.model,
            data.profile_id,
            int(data.prompt_price_wei),
            int(data.completion_price_wei),
            session.token_id,
        )
        return PriceList(list(book))

    @get("/prices", summary="The price book", responses=problems(401))
    async def prices(
        self, plane: NamedDependency[ControlPlane], session: NamedDependency[AdminSession]
    ) -> PriceList:
        plane.managed.billing.forget_prices()
        return PriceList(list(await plane.managed.billing.price_book()))

    @post(
        "/release-stale",
        summary="List (dry run) or release stale reservations",
        status_code=200,
        responses=problems(400, 401, 403),
    )
    async def release_stale(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        data: JSONBody[StaleSweep],
    ) -> StaleList:
        require(session, "admin")
        found = await plane.managed.billing.release_stale(data.older_than_s, dry_run=data.dry_run)
        return StaleList(
            dry_run=data.dry_run,
            data=[
                StaleOut(
                    reservation_id=s.reservation_id,
                    job_id=s.job_id,
                    state=s.state,
                    amount_wei=str(s.amount_wei),
                    updated_at=s.updated_at,
                    released=s.released,
                )
                for s in found
            ],
        )

    @get(
        "/treasury-report",
        summary="Customer debits, node payouts and protocol fees",
        responses=problems(400, 401, 403),
    )
    async def treasury(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        window_days: Annotated[int, QueryParameter(ge=1, le=3660)] = 30,
    ) -> TreasuryReport:
        require(session, "admin")
        since = plane.clock() - timedelta(days=window_days)
        async with plane.pool.acquire() as conn:
            t = await q.treasury(conn, since)
        return TreasuryReport(
            window_days=window_days,
            since=since,
            customer_debits_wei=str(t.debits_wei),
            debit_count=t.debit_count,
            node_payouts_wei=str(t.payouts_wei),
            protocol_fees_wei=str(t.fees_wei),
            payout_count=t.payout_count,
            fee_bps=plane.managed.billing.fee_bps,
        )
