"""Customer-facing billing (a gateway key with the billing:read scope) and public receipts."""

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from adapters.billing import GatewayPrincipal
from adapters.bootstrap import ControlPlane
from adapters.http.bearer import bearer_token
from adapters.http.billing_schemas import AccountOut, account_out
from adapters.http.problems import ApiError, problems
from domain.billing.state import BILLING_READ, Policy
from projections import billing_queries as q

RECEIPT_HASH = re.compile(r"^[0-9a-f]{64}$")


class CustomerAccountOut(AccountOut, frozen=True, kw_only=True):
    key_id: str
    key_policy: Policy


class EntryOut(msgspec.Struct, frozen=True, kw_only=True):
    entry_id: str
    kind: str
    amount_wei: str
    balance_after_wei: str
    reserved_after_wei: str
    receipt_hash: str | None
    job_id: str | None
    reservation_id: str | None
    created_at: datetime


class TotalOut(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    count: int
    amount_wei: str


class UsageOut(msgspec.Struct, frozen=True, kw_only=True):
    window_days: int
    totals: list[TotalOut]
    entries: list[EntryOut]


class JobReservationOut(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    state: str
    model: str | None
    amount_wei: str | None
    debited_wei: str | None
    released_wei: str | None
    node_id: str | None
    receipt_hash: str | None
    created_at: datetime | None
    updated_at: datetime


class JobOut(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    reservations: list[JobReservationOut]
    entries: list[EntryOut]


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def entry_out(e: q.Entry) -> EntryOut:
    return EntryOut(
        entry_id=e.entry_id,
        kind=e.kind,
        amount_wei=str(e.amount_wei),
        balance_after_wei=str(e.balance_after_wei),
        reserved_after_wei=str(e.reserved_after_wei),
        receipt_hash=e.receipt_hash,
        job_id=e.job_id,
        reservation_id=e.reservation_id,
        created_at=e.created_at,
    )


async def _principal(
    request: Request[Any, Any, Any], plane: NamedDependency[ControlPlane]
) -> GatewayPrincipal:
    secret = bearer_token(request.headers.get("authorization"))
    principal = await plane.managed.billing.authenticate(secret) if secret else None
    if principal is None:
        raise ApiError(401, "unauthorized", "Unauthorized", "a valid gateway key is required")
    if BILLING_READ not in principal.scopes:
        raise ApiError(
            403, "gateway_api_key_scope_denied", "Forbidden", "the key lacks billing:read"
        )
    return principal


class CustomerBillingController(Controller):
    path = "/v1/billing"
    tags = ["billing"]
    dependencies = {"principal": Provide(_principal)}

    @get(
        "/account", summary="Balance, reserved, available and policy", responses=problems(401, 403)
    )
    async def account(
        self,
        plane: NamedDependency[ControlPlane],
        principal: NamedDependency[GatewayPrincipal],
    ) -> CustomerAccountOut:
        state = await plane.managed.billing.account(principal.customer_id)
        key = None if state is None else state.keys.get(principal.key_id)
        if state is None or key is None:
            raise ApiError(401, "unauthorized", "Unauthorized", "a valid gateway key is required")
        base = account_out(state)
        return CustomerAccountOut(
            **msgspec.structs.asdict(base), key_id=key.key_id, key_policy=key.policy
        )

    @get(
        "/usage", summary="Totals by kind and the latest entries", responses=problems(400, 401, 403)
    )
    async def usage(
        self,
        plane: NamedDependency[ControlPlane],
        principal: NamedDependency[GatewayPrincipal],
        window_days: Annotated[int, QueryParameter(ge=1, le=366)] = 30,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> UsageOut:
        since = plane.clock() - timedelta(days=window_days)
        async with plane.pool.acquire() as conn:
            totals, entries = await q.usage(conn, principal.customer_id, since, limit)
        return UsageOut(
            window_days=window_days,
            totals=[
                TotalOut(kind=t.kind, count=t.count, amount_wei=str(t.amount_wei)) for t in totals
            ],
            entries=[entry_out(e) for e in entries],
        )

    @get(
        "/jobs/{job_id:str}",
        summary="A job's reservations and entries",
        responses=problems(400, 401, 403, 404),
    )
    async def job(
        self,
        plane: NamedDependency[ControlPlane],
        principal: NamedDependency[GatewayPrincipal],
        job_id: FromPath[str],
    ) -> JobOut:
        async with plane.pool.acquire() as conn:
            reservations, entries = await q.job(conn, principal.customer_id, job_id)
        if not reservations:
            raise ApiError(404, "not_found", "Not Found", "no such job")
        return JobOut(
            job_id=job_id,
            reservations=[
                JobReservationOut(
                    reservation_id=r.reservation_id,
                    state=r.state,
                    model=r.model,
                    amount_wei=_text(r.amount_wei),
                    debited_wei=_text(r.debited_wei),
                    released_wei=_text(r.released_wei),
                    node_id=r.node_id,
                    receipt_hash=r.receipt_hash,
                    created_at=r.created_at,
                    updated_at=r.updated_at,
                )
                for r in reservations
            ],
            entries=[entry_out(e) for e in entries],
        )


class PublicReceiptController(Controller):
    tags = ["public"]

    @get(
        "/v1/receipts/{receipt_hash:str}",
        summary="An accepted receipt, public-safe",
        responses=problems(400, 404),
    )
    async def receipt(
        self, plane: NamedDependency[ControlPlane], receipt_hash: FromPath[str]
    ) -> q.PublicReceipt:
        found = None
        if RECEIPT_HASH.match(receipt_hash):
            async with plane.pool.acquire() as conn:
                found = await q.public_receipt(conn, receipt_hash)
        if found is None:
            raise ApiError(404, "not_found", "Not Found", "no such accepted receipt")
        return found
