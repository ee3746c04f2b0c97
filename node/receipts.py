"""Signed local receipts: usage and timings of one completion, digests but never content."""

import time

import msgspec

from domain.canonical import canonical_bytes, sha256_hex
from domain.ids import uuid7
from domain.signing import Keyring, Signer
from node.state import Database

RECEIPT_VERSION = 1


class Usage(msgspec.Struct, frozen=True):
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


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    receipt_hash: str
    signature: str
    body: ReceiptBody


def digest(value: object) -> str:
    return sha256_hex(canonical_bytes(value))


def issue_receipt(
    signer: Signer,
    *,
    node_id: str,
    model: str,
    runtime_kind: str,
    stream: bool,
    finish_reason: str,
    usage: Usage,
    timings: Timings,
    request_digest: str,
    response_digest: str,
) -> Receipt:
    body = ReceiptBody(
        receipt_id=uuid7(),
        node_id=node_id,
        key_id=signer.key_id,
        model=model,
        runtime_kind=runtime_kind,
        created_at_ms=time.time_ns() // 1_000_000,
        stream=stream,
        finish_reason=finish_reason,
        usage=usage,
        timings=timings,
        request_digest=request_digest,
        response_digest=response_digest,
    )
    message = canonical_bytes(body)
    return Receipt(receipt_hash=sha256_hex(message), signature=signer.sign(message), body=body)


def verify_receipt(receipt: Receipt, keyring: Keyring) -> str | None:
    """None when the receipt is intact and signed by a known key, else the reason it is not."""
    message = canonical_bytes(receipt.body)
    if sha256_hex(message) != receipt.receipt_hash:
        return "receipt_hash_mismatch"
    if not keyring.verify(receipt.body.key_id, message, receipt.signature):
        return "invalid_signature"
    return None


_decoder = msgspec.json.Decoder(ReceiptBody)


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, receipt: Receipt) -> None:
        self._db.execute(
            "INSERT INTO receipts (receipt_hash, body, signature) VALUES (?, ?, ?)",
            (receipt.receipt_hash, canonical_bytes(receipt.body), receipt.signature),
        )

    def recent(self, limit: int = 50, before_seq: int | None = None) -> list[Receipt]:
        rows = self._db.query(
            "SELECT receipt_hash, body, signature FROM receipts WHERE seq < ? "
            "ORDER BY seq DESC LIMIT ?",
            (before_seq if before_seq is not None else 2**62, limit),
        )
        return [
            Receipt(
                receipt_hash=r["receipt_hash"],
                signature=r["signature"],
                body=_decoder.decode(r["body"]),
            )
            for r in rows
        ]

    def count(self) -> int:
        row = self._db.one("SELECT count(*) AS n FROM receipts")
        return 0 if row is None else int(row["n"])
