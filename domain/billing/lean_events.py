"""Customer events decoded without their account snapshot's detail, for folds over the
whole ledger: the snapshot is most of an event's bytes and a fold needs its totals only.

Each lean class is a subclass of the real event (so ``isinstance`` holds) whose
``account`` keeps just ``balance_wei`` and ``reserved_wei``.
"""

from functools import cache
from typing import cast

import msgspec

from domain.events import Event, decode_payload
from domain.events.billing import CUSTOMER_EVENTS


class AccountTotals(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    balance_wei: str
    reserved_wei: str


def _lean(cls: type[Event]) -> type[Event]:
    lean = msgspec.defstruct(
        f"Lean{cls.__name__}",
        [("account", AccountTotals | None, None)],
        bases=(cls,),
        tag=cls.__name__,
        frozen=True,
        kw_only=True,
    )
    return cast(type[Event], lean)


_LEAN = {cls.__name__: _lean(cls) for cls in CUSTOMER_EVENTS}


@cache
def _decoder(name: str) -> msgspec.json.Decoder[Event]:
    return msgspec.json.Decoder(_LEAN[name])


def decode_lean(event_type: str, schema_version: int, payload: bytes | msgspec.Raw) -> Event:
    """A lean customer event; any other type as ``decode_payload`` gives it."""
    if event_type not in _LEAN:
        return decode_payload(event_type, schema_version, payload)
    return _decoder(event_type).decode(payload)
