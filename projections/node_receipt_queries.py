"""Read-side queries over node_receipts: plain SQL."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from domain.receipts import Receipt, Usage
from projections.db import Database
from projections.node_receipts import NAME


class NodeReceiptView(msgspec.Struct, frozen=True, kw_only=True):
    receipt_hash: str
    node_id: str
    model: str
    runtime_kind: str
    usage: Usage
    created_at: datetime
    """When the node says it finished the completion (its clock)."""
    recorded_at: datetime
    """When the control plane appended it to the ledger."""
    seq: int
    """Its report's ledger sequence."""
    dispatch_id: str | None
    """Set for routed work: the dispatch it answered (billing settled that from the debit)."""
    receipt: Receipt
    """The signed receipt itself, to verify offline with the node's public key."""


_PAGE = """
SELECT receipt_hash, node_id, model, runtime_kind, prompt_tokens, completion_tokens,
       total_tokens, created_at, recorded_at, seq, dispatch_id, receipt::text AS receipt
FROM node_receipts
WHERE node_id = $1 AND ($2::bigint IS NULL OR (seq, receipt_hash) < ($2, $3))
ORDER BY seq DESC, receipt_hash DESC
LIMIT $4
"""
_receipt = msgspec.json.Decoder(Receipt)


def _view(row: Any) -> NodeReceiptView:
    return NodeReceiptView(
        receipt_hash=row["receipt_hash"],
        node_id=row["node_id"],
        model=row["model"],
        runtime_kind=row["runtime_kind"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]),
        created_at=row["created_at"],
        recorded_at=row["recorded_at"],
        seq=row["seq"],
        dispatch_id=row["dispatch_id"],
        receipt=_receipt.decode(row["receipt"]),
    )


async def node_receipts(
    db: Database, node_id: str, *, after: tuple[int, str] | None, limit: int
) -> list[NodeReceiptView] | None:
    """Newest report first; ``after``: the (seq, receipt_hash) the last page ended at.
    None for a node the read models do not know."""
    if not await db.fetchval("SELECT EXISTS (SELECT 1 FROM nodes WHERE node_id = $1)", node_id):
        return None
    seq, receipt_hash = after if after is not None else (None, "")
    rows = await db.fetch(_PAGE, node_id, seq, receipt_hash, limit)
    return [_view(row) for row in rows]


async def recorded_receipts(
    db: Database, node_id: str, hashes: Sequence[str], ledger: str
) -> tuple[set[str], int]:
    """Which of ``hashes`` the read model holds for the node, and the ledger sequence up to
    which it is complete (every report at or before it is in)."""
    # The checkpoint first: rows read after it include every report it covers.
    upto = await db.fetchval(
        "SELECT last_seq FROM projection_checkpoints WHERE projection = $1 AND stream = $2",
        NAME,
        ledger,
    )
    rows = await db.fetch(
        "SELECT receipt_hash FROM node_receipts WHERE node_id = $1 AND receipt_hash = ANY($2)",
        node_id,
        list(hashes),
    )
    return {row["receipt_hash"] for row in rows}, int(upto or 0)
