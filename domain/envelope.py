"""The signed event envelope.

On the wire an event is ``{"body": <canonical JSON>, "sig": "<ed25519>"}``. The body
holds every field that matters (id, type, schema version, subject, time, signer, the
previous event's hash on the same subject, the payload), and the signature covers the
body's exact bytes, so a verifier needs no re-encoding: it checks the bytes it was given.
An event's hash is the SHA-256 of those same body bytes.
"""

from datetime import datetime

import msgspec

from domain.canonical import sha256_hex


class EnvelopeBody(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    type: str
    schema_version: int
    subject: str
    occurred_at: datetime
    signer: str
    prev_hash: str | None
    """Hash of the previous event on this subject; None opens a chain (or an unchained subject)."""
    payload: msgspec.Raw


class WireEnvelope(msgspec.Struct, frozen=True):
    body: msgspec.Raw
    sig: str


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """One message as the log holds it: where it sits, and its exact bytes."""

    stream: str
    seq: int
    subject: str
    data: bytes


_wire_encoder = msgspec.json.Encoder()
_wire_decoder = msgspec.json.Decoder(WireEnvelope)
_body_decoder = msgspec.json.Decoder(EnvelopeBody)


def wire_bytes(body: bytes, signature: str) -> bytes:
    return _wire_encoder.encode(WireEnvelope(msgspec.Raw(body), signature))


def split_wire(data: bytes) -> WireEnvelope:
    """Raises msgspec.DecodeError / ValidationError on anything but a well-formed envelope."""
    try:
        return _wire_decoder.decode(data)
    except UnicodeDecodeError as exc:  # msgspec's error for bad UTF-8 inside a string
        raise msgspec.DecodeError(f"invalid UTF-8: {exc.reason}") from None


def decode_body(body: bytes | msgspec.Raw) -> EnvelopeBody:
    """Raises msgspec.DecodeError / ValidationError on anything but a well-formed body."""
    try:
        return _body_decoder.decode(body)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8: {exc.reason}") from None


class _Stored(msgspec.Struct, frozen=True):
    body: EnvelopeBody


_stored_decoder = msgspec.json.Decoder(_Stored)


def body_of(data: bytes) -> EnvelopeBody:
    """A stored envelope's body in one pass, its signature skipped: for reads of our own
    log (``audit verify`` checks signatures; splitting first parsed every byte twice)."""
    try:
        return _stored_decoder.decode(data).body
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8: {exc.reason}") from None


def event_hash(body: bytes | msgspec.Raw) -> str:
    return sha256_hex(bytes(body))
