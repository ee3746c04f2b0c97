"""Payout batches as the read models hold them, and the payouts no batch has claimed."""

from datetime import datetime

import msgspec

from domain.events import PayoutRow
from projections.db import Database


class BatchSummary(msgspec.Struct, frozen=True, kw_only=True):
    batch_id: str
    state: str
    payout_count: int
    total_amount_wei: str
    merkle_root: str
    target: str | None
    reference: str | None
    created_at: datetime
    updated_at: datetime
    last_seq: int


async def unbatched_payouts(db: Database) -> list[PayoutRow]:
    rows = await db.fetch(
        "SELECT payout_id, node_id, receipt_hash, amount_wei FROM node_payouts"
        " WHERE batch_id IS NULL ORDER BY payout_id"
    )
    return [
        PayoutRow(payout_id=r[0], node_id=r[1], receipt_hash=r[2], amount_wei=str(int(r[3])))
        for r in rows
    ]


async def batches(db: Database, limit: int = 100) -> list[BatchSummary]:
    rows = await db.fetch(
        "SELECT batch_id, state, payout_count, total_amount_wei, merkle_root, target,"
        " reference, created_at, updated_at, last_seq FROM payout_batches"
        " ORDER BY created_at DESC, batch_id DESC LIMIT $1",
        limit,
    )
    return [
        BatchSummary(
            batch_id=r[0],
            state=r[1],
            payout_count=int(r[2]),
            total_amount_wei=str(int(r[3])),
            merkle_root=r[4],
            target=r[5],
            reference=r[6],
            created_at=r[7],
            updated_at=r[8],
            last_seq=int(r[9]),
        )
        for r in rows
    ]
