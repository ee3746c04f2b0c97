from collections.abc import Sequence
from typing import Any

from domain.decoding import Decoded
from domain.events import ProtocolObserved
from projections.db import Database


class ProtocolProjection:
    """The latest protocol registry observation per node (for list filters)."""

    name = "protocol"
    stream = "ledger"
    handles = (ProtocolObserved,)
    tables = ("node_protocol",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        latest: dict[str, tuple[Any, ...]] = {}
        for p in batch:
            if isinstance(p.event, ProtocolObserved):
                e = p.event
                latest[e.node_id] = (
                    e.node_id,
                    e.registered,
                    e.active,
                    int(e.stake_wei),
                    e.source,
                    e.observed_at,
                    e.recorded_by,
                    p.body.event_id,
                    p.seq,
                )
        if latest:
            await db.executemany(
                "INSERT INTO node_protocol (node_id, registered, active, stake_wei, source,"
                " observed_at, recorded_by, event_id, seq)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (node_id) DO UPDATE SET registered = EXCLUDED.registered,"
                " active = EXCLUDED.active, stake_wei = EXCLUDED.stake_wei,"
                " source = EXCLUDED.source, observed_at = EXCLUDED.observed_at,"
                " recorded_by = EXCLUDED.recorded_by, event_id = EXCLUDED.event_id,"
                " seq = EXCLUDED.seq",
                list(latest.values()),
            )
