"""Local receipts: issued for every completion, kept in the node's database."""

import time

import msgspec

from domain.canonical import canonical_bytes
from domain.ids import uuid7
from domain.receipts import (
    Receipt,
    ReceiptBody,
    Timings,
    Usage,
    digest,
    sign_receipt,
    verify_receipt,
)
from domain.signing import Signer
from node.state import Database


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
    dispatch_id: str | None = None,
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
        dispatch_id=msgspec.UNSET if dispatch_id is None else dispatch_id,
    )
    return sign_receipt(signer, body)


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


__all__ = [
    "Receipt",
    "ReceiptBody",
    "ReceiptStore",
    "Timings",
    "Usage",
    "digest",
    "issue_receipt",
    "verify_receipt",
]
