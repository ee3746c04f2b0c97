"""Turning payloads into signed, chained envelopes ready to append (pure)."""

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import msgspec

from domain.canonical import canonical_bytes
from domain.envelope import EnvelopeBody, event_hash, wire_bytes
from domain.events import Event, type_name
from domain.ids import uuid7
from domain.signing import Signer


class Sealed(NamedTuple):
    """An envelope ready for the log: its id (the dedupe key), its hash and its bytes."""

    event_id: str
    hash: str
    data: bytes


def seal(
    subject: str,
    events: Sequence[Event],
    *,
    prev_hash: str | None,
    signer: Signer,
    now: datetime,
    chained: bool = True,
) -> list[Sealed]:
    """Sign each event in order; with ``chained`` each links to the one before it."""
    sealed: list[Sealed] = []
    for event in events:
        event_id = uuid7()
        body = canonical_bytes(
            EnvelopeBody(
                event_id=event_id,
                type=type_name(event),
                schema_version=event.SCHEMA_VERSION,
                subject=subject,
                occurred_at=now,
                signer=signer.key_id,
                prev_hash=prev_hash if chained else None,
                payload=msgspec.Raw(canonical_bytes(event)),
            )
        )
        digest = event_hash(body)
        sealed.append(Sealed(event_id, digest, wire_bytes(body, signer.sign(body))))
        prev_hash = digest
    return sealed


class _IdOnly(msgspec.Struct):
    event_id: str


class _WireIdOnly(msgspec.Struct):
    body: _IdOnly


_wire_id_decoder = msgspec.json.Decoder(_WireIdOnly)


def split_event_id(data: bytes) -> str:
    """The event id of wire bytes, without decoding or checking the rest."""
    return _wire_id_decoder.decode(data).body.event_id
