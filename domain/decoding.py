"""Typed views of stored events."""

from typing import NamedTuple

from domain.envelope import EnvelopeBody, StoredEvent, decode_body, event_hash, split_wire
from domain.events import Event, decode_payload


class Decoded(NamedTuple):
    seq: int
    subject: str
    body: EnvelopeBody
    event: Event


def decode_stored(stored: StoredEvent) -> Decoded:
    """Decode without verifying signatures: for data that came from our own log.
    (`b3iq audit verify` proves the log separately; verifying on every read would cap
    replay at signature speed.)"""
    body = decode_body(split_wire(stored.data).body)
    event = decode_payload(body.type, body.schema_version, body.payload)
    return Decoded(stored.seq, stored.subject, body, event)


def stored_hash(stored: StoredEvent) -> str:
    """The chain hash of a stored event: SHA-256 of its signed body bytes."""
    return event_hash(split_wire(stored.data).body)
