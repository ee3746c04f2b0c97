"""Signed receipts: usage and timings of one completion, digests but never content (pure).

A node signs the canonical bytes of a ``ReceiptBody``; the receipt hash is their SHA-256.
Anyone holding the node's public key verifies it offline; the control plane verifies it
before it debits a customer or pays a node.
"""

import msgspec

from domain.canonical import canonical_bytes, sha256_hex
from domain.signing import Keyring, Signer

RECEIPT_VERSION = 1


class Usage(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(msgspec.Struct, frozen=True, kw_only=True):
    """Whole microseconds: integers encode one way only, so the signed bytes are stable."""

    queue_us: int
    ttft_us: int
    latency_us: int


class ReceiptBody(msgspec.Struct, frozen=True, kw_only=True):
    version: int = RECEIPT_VERSION
    receipt_id: str
    node_id: str
    key_id: str
    model: str
    runtime_kind: str
    created_at_ms: int
    stream: bool
    finish_reason: str
    usage: Usage
    timings: Timings
    request_digest: str
    response_digest: str
    dispatch_id: str | msgspec.UnsetType = msgspec.UNSET
    """The id the control plane dispatched the request under (routed work only): a
    receipt settles that one reservation and no other. Unset is left out of the signed
    bytes, so receipts from before it verify unchanged."""


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    receipt_hash: str
    signature: str
    body: ReceiptBody


def digest(value: object) -> str:
    return sha256_hex(canonical_bytes(value))


def sign_receipt(signer: Signer, body: ReceiptBody) -> Receipt:
    message = canonical_bytes(body)
    return Receipt(receipt_hash=sha256_hex(message), signature=signer.sign(message), body=body)


def verify_receipt(receipt: Receipt, keyring: Keyring) -> str | None:
    """None when the receipt is intact and signed by a known key, else the reason it is not:
    ``receipt_hash_mismatch`` or ``invalid_signature``."""
    message = canonical_bytes(receipt.body)
    if sha256_hex(message) != receipt.receipt_hash:
        return "receipt_hash_mismatch"
    if not keyring.verify(receipt.body.key_id, message, receipt.signature):
        return "invalid_signature"
    return None


def check_receipt(
    receipt: Receipt, keyring: Keyring, *, node_id: str, model: str, dispatch_id: str
) -> str | None:
    """``verify_receipt``, and the receipt answers this dispatch, on this node, of this
    model (else ``receipt_mismatch``): what a caller that dispatched the request must check."""
    problem = verify_receipt(receipt, keyring)
    body = receipt.body
    if problem is None and (body.node_id, body.model, body.dispatch_id) != (
        node_id,
        model,
        dispatch_id,
    ):
        return "receipt_mismatch"
    return problem
