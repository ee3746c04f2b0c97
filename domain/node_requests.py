"""Signed node requests: how a node proves, per HTTP request, that it holds its key (pure).

The node signs one canonical text with its Ed25519 key::

    B3IQ-NODE-REQUEST-V1\\n<METHOD>\\n<path?query>\\n<sha256 hex of body>\\n
    <unix seconds>\\n<nonce>\\n<node id>\\n<key id>

(eight lines joined by "\\n", no trailing newline) and sends the parts as headers. The
verifier rebuilds the text from what it received, so nothing outside it can be altered.
"""

import re
from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

from domain.canonical import sha256_hex
from domain.signing import Keyring, Signer

SCHEME = "B3IQ-NODE-REQUEST-V1"
NODE_ID = "x-b3iq-node-id"
KEY_ID = "x-b3iq-key-id"
TIMESTAMP = "x-b3iq-timestamp"
NONCE = "x-b3iq-nonce"
SIGNATURE = "x-b3iq-signature"
HEADERS = (NODE_ID, KEY_ID, TIMESTAMP, NONCE, SIGNATURE)

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class SignedHeaders(NamedTuple):
    node_id: str
    key_id: str
    timestamp: int
    nonce: str
    signature: str


class Rejection(NamedTuple):
    """Why a request is refused: a stable code for clients and a precise reason."""

    code: str
    reason: str


def canonical_request(
    *, method: str, path: str, body: bytes, timestamp: int, nonce: str, node_id: str, key_id: str
) -> bytes:
    parts = (SCHEME, method.upper(), path, sha256_hex(body), str(timestamp), nonce, node_id, key_id)
    return "\n".join(parts).encode()


def sign_request(
    signer: Signer,
    node_id: str,
    *,
    method: str,
    path: str,
    body: bytes,
    timestamp: int,
    nonce: str,
) -> dict[str, str]:
    """The headers that authenticate one request (the nonce: 16-64 URL-safe characters)."""
    text = canonical_request(
        method=method,
        path=path,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
        node_id=node_id,
        key_id=signer.key_id,
    )
    return {
        NODE_ID: node_id,
        KEY_ID: signer.key_id,
        TIMESTAMP: str(timestamp),
        NONCE: nonce,
        SIGNATURE: signer.sign(text),
    }


def parse_headers(headers: Mapping[str, str]) -> SignedHeaders | Rejection:
    values = [headers.get(name) for name in HEADERS]
    node_id, key_id, timestamp, nonce, signature = values
    if node_id is None or key_id is None or timestamp is None or nonce is None or not signature:
        return Rejection("unauthorized", "missing_signature_headers")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return Rejection("invalid_signature", "malformed_timestamp")
    if not _NONCE.match(nonce):
        return Rejection("invalid_signature", "malformed_nonce")
    return SignedHeaders(node_id, key_id, int(timestamp), nonce, signature)


def check_request(
    signed: SignedHeaders,
    *,
    method: str,
    path: str,
    body: bytes,
    node_keys: Keyring,
    now: datetime,
    skew_s: float,
) -> Rejection | None:
    """Signature and clock checks; the nonce's first use is checked by the caller's store."""
    text = canonical_request(
        method=method,
        path=path,
        body=body,
        timestamp=signed.timestamp,
        nonce=signed.nonce,
        node_id=signed.node_id,
        key_id=signed.key_id,
    )
    return check_signed_text(signed, text, node_keys=node_keys, now=now, skew_s=skew_s)


def check_signed_text(
    signed: SignedHeaders, text: bytes, *, node_keys: Keyring, now: datetime, skew_s: float
) -> Rejection | None:
    """``check_request`` for a canonical text already built from the request."""
    if abs(now.timestamp() - signed.timestamp) > skew_s:
        return Rejection("invalid_signature", "timestamp_outside_window")
    if signed.key_id not in node_keys:
        return Rejection("invalid_signature", "wrong_key")
    if not node_keys.verify(signed.key_id, text, signed.signature):
        return Rejection("invalid_signature", "bad_signature")
    return None
