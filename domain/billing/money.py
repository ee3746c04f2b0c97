"""Amounts in wei: integers in the domain, decimal strings on the wire and on the log."""

import re

import msgspec

from domain.receipts import Usage

WEI_TEXT = r"^[0-9]{1,78}$"
"""An amount as it travels: a non-negative decimal integer (78 digits hold 2**256)."""
SIGNED_WEI_TEXT = r"^-?[0-9]{1,78}$"
_WEI = re.compile(WEI_TEXT)
BASIS_POINTS = 10_000


def wei(text: str) -> int:
    """Parse an amount from the log or the wire; raises ValueError for anything else."""
    if not _WEI.match(text):
        raise ValueError(f"not an amount in wei: {text!r}")
    return int(text)


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """What one token costs, for a model (and optionally one of its profiles)."""

    model: str
    profile_id: str | None = None
    prompt_wei: int
    completion_wei: int


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """The most a request may cost: the prompt estimate plus ``max_tokens`` of output."""

    model: str
    profile_id: str | None
    prompt_tokens: int
    max_tokens: int
    prompt_price_wei: int
    completion_price_wei: int
    amount_wei: int


def quote_for(price: Price, prompt_tokens: int, max_tokens: int) -> Quote:
    if prompt_tokens < 0 or max_tokens < 1:
        raise ValueError("prompt_tokens must be >= 0 and max_tokens >= 1")
    return Quote(
        model=price.model,
        profile_id=price.profile_id,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        prompt_price_wei=price.prompt_wei,
        completion_price_wei=price.completion_wei,
        amount_wei=prompt_tokens * price.prompt_wei + max_tokens * price.completion_wei,
    )


def cost_of(usage: Usage, prompt_price_wei: int, completion_price_wei: int, held_wei: int) -> int:
    """Actual usage at the reserved prices, never more than was reserved."""
    actual = usage.prompt_tokens * prompt_price_wei + usage.completion_tokens * completion_price_wei
    return max(0, min(actual, held_wei))


def fee_of(amount_wei: int, fee_bps: int) -> int:
    """The protocol's share, rounded down (the node never gets less than its exact share)."""
    return amount_wei * fee_bps // BASIS_POINTS
