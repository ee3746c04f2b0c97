"""Typed views of stored events."""

from domain.envelope import EnvelopeBody, StoredEvent, body_of, event_hash, split_wire
from domain.events import Event, decode_payload


class Decoded:
    """A stored event with its body decoded. Its payload is decoded when first asked for,
    once, however many projections look at it: most of a replay's decoding is heartbeats,
    of which a projection keeps only each node's latest."""

    __slots__ = ("_event", "body", "seq", "subject")

    def __init__(self, seq: int, subject: str, body: EnvelopeBody, event: Event | None = None):
        self.seq = seq
        self.subject = subject
        self.body = body
        self._event = event

    @property
    def event(self) -> Event:
        if self._event is None:
            body = self.body
            self._event = decode_payload(body.type, body.schema_version, body.payload)
        return self._event

    def __repr__(self) -> str:
        return f"Decoded(seq={self.seq}, subject={self.subject!r}, type={self.body.type!r})"


def decode_stored(stored: StoredEvent) -> Decoded:
    """Decode without verifying signatures: for data that came from our own log.
    (`b3iq audit verify` proves the log separately; verifying on every read would cap
    replay at signature speed.)"""
    body = body_of(stored.data)
    event = decode_payload(body.type, body.schema_version, body.payload)
    return Decoded(stored.seq, stored.subject, body, event)


def decode_lazily(stored: StoredEvent) -> Decoded:
    """As ``decode_stored``, its payload decoded only if asked for: a decision that reads
    no more of a subject's tail than where it stands (a node's receipt reports, a hundred
    receipts each) need not decode it."""
    return Decoded(stored.seq, stored.subject, body_of(stored.data))


def stored_hash(stored: StoredEvent) -> str:
    """The chain hash of a stored event: SHA-256 of its signed body bytes."""
    return event_hash(split_wire(stored.data).body)
