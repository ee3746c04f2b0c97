"""Receipts nodes submitted, one row each, from their ``receipts.<node_id>`` subjects."""

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from domain.decoding import Decoded
from domain.events import NodeReceiptsReported
from projections.db import Database

NAME = "node_receipts"

_INSERT = """
INSERT INTO node_receipts (receipt_hash, node_id, receipt_id, key_id, model, runtime_kind,
    prompt_tokens, completion_tokens, total_tokens, dispatch_id, created_at, recorded_at,
    receipt, seq)
SELECT h, n, r, k, m, rk, pt, ct, tt, d, ca, ra, j::jsonb, s
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::timestamptz[],
            $12::timestamptz[], $13::text[], $14::bigint[])
    AS t(h, n, r, k, m, rk, pt, ct, tt, d, ca, ra, j, s)
ON CONFLICT (receipt_hash) DO NOTHING
"""
_json = msgspec.json.Encoder()


class NodeReceiptsProjection:
    """A report holds only receipts new to the ledger (the intake drops the rest), so
    a receipt lands here once; ``DO NOTHING`` only makes a replay harmless."""

    name = NAME
    stream = "ledger"
    handles = (NodeReceiptsReported,)
    tables = ("node_receipts",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        columns: list[list[object]] = [[] for _ in range(14)]
        for p in batch:
            if not isinstance(p.event, NodeReceiptsReported):
                continue
            for receipt in p.event.receipts:
                b = receipt.body
                row = (
                    receipt.receipt_hash,
                    p.event.node_id,
                    b.receipt_id,
                    b.key_id,
                    b.model,
                    b.runtime_kind,
                    b.usage.prompt_tokens,
                    b.usage.completion_tokens,
                    b.usage.total_tokens,
                    None if isinstance(b.dispatch_id, msgspec.UnsetType) else b.dispatch_id,
                    datetime.fromtimestamp(b.created_at_ms / 1000, UTC),
                    p.body.occurred_at,
                    _json.encode(receipt).decode(),
                    p.seq,
                )
                for column, value in zip(columns, row, strict=True):
                    column.append(value)
        if columns[0]:
            await db.execute(_INSERT, *columns)
