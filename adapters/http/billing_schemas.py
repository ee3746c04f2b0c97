"""Billing request and response bodies: amounts are decimal strings, fields ``*_wei``."""

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from domain.billing.money import SIGNED_WEI_TEXT, WEI_TEXT
from domain.billing.state import SCOPES, AccountState, Policy

Wei = Annotated[str, Meta(pattern=WEI_TEXT)]
SignedWei = Annotated[str, Meta(pattern=SIGNED_WEI_TEXT)]
Reason = Annotated[str, Meta(min_length=1, max_length=512)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Token = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
ModelName = Annotated[str, Meta(min_length=1, max_length=256)]
Scope = Annotated[str, Meta(pattern="^(" + "|".join(SCOPES) + ")$")]


class PolicyIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    allowed_models: Annotated[list[ModelName], Meta(max_length=256)] | None = None
    allowed_route_tiers: Annotated[list[Token], Meta(max_length=16)] | None = None
    max_price_wei: Wei | None = None
    spend_cap_wei: Wei | None = None
    spend_window_s: Annotated[int, Meta(ge=60, le=90 * 24 * 3600)] | None = None

    def policy(self, default_window_s: int) -> Policy:
        return Policy(
            allowed_models=None if self.allowed_models is None else tuple(self.allowed_models),
            allowed_route_tiers=None
            if self.allowed_route_tiers is None
            else tuple(self.allowed_route_tiers),
            max_price_wei=None if self.max_price_wei is None else str(int(self.max_price_wei)),
            spend_cap_wei=None if self.spend_cap_wei is None else str(int(self.spend_cap_wei)),
            spend_window_s=self.spend_window_s or default_window_s,
        )


class NewCustomer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    customer_id: Token | None = None
    policy: PolicyIn | None = None


class Credit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    amount_wei: Wei
    reason: Reason


class Adjustment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    amount_wei: SignedWei
    reason: Reason


class PolicyChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    policy: PolicyIn
    reason: Reason


class NewGatewayKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    scopes: Annotated[list[Scope], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: list(SCOPES)
    )
    policy: PolicyIn | None = None
    expires_in_s: Annotated[float, Meta(gt=0, le=5 * 365 * 24 * 3600)] | None = None


class Why(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason


class NewPrice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: ModelName
    profile_id: Token | None = None
    prompt_price_wei: Wei
    completion_price_wei: Wei


class StaleSweep(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    older_than_s: Annotated[float, Meta(ge=0)] | None = None
    dry_run: bool = True


class AccountOut(msgspec.Struct, frozen=True, kw_only=True):
    balance_wei: str
    reserved_wei: str
    available_wei: str
    open_reservations: int
    policy: Policy


class AdminAccountOut(AccountOut, frozen=True, kw_only=True):
    customer_id: str
    name: str
    created_at: datetime
    key_ids: list[str]


def account_out(state: AccountState) -> AccountOut:
    return AccountOut(**_amounts(state))


def admin_account_out(state: AccountState) -> AdminAccountOut:
    return AdminAccountOut(
        **_amounts(state),
        customer_id=state.customer_id,
        name=state.name,
        created_at=state.created_at,
        key_ids=sorted(state.keys),
    )


def _amounts(state: AccountState) -> dict[str, Any]:
    balance, reserved = int(state.balance_wei), int(state.reserved_wei)
    return {
        "balance_wei": str(balance),
        "reserved_wei": str(reserved),
        "available_wei": str(balance - reserved),
        "open_reservations": len(state.open),
        "policy": state.policy,
    }
